//! The OSDP secure channel's cryptography (SCS_11–18, PROTOCOLS.md): session keys from the SCBK
//! and the CP's random, the client and host cryptograms, the initial R-MAC, the MAC chain over
//! packets, and the encryption of their data. Pure functions over bytes; the handshake and the
//! packets' security blocks build on them.
//!
//! Checked against the SIA specification's Annex E (SCBK-D session keys, cryptograms, R-MAC-I)
//! and against libosdp's own vectors (MAC over one, four and a partial block; data of 0, 15 and
//! 16 bytes), so that both ends of a channel can be independent implementations.

use aes::Aes128;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

/// The install-mode key every reader knows (SCBK-D): bytes 0x30..0x3F.
pub const SCBK_D: [u8; 16] =
    [0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F];

/// The end-of-message marker that pads data and the last MAC block.
const EOM: u8 = 0x80;

type Block = [u8; 16];

fn encrypt(key: &Block, mut block: Block) -> Block {
    let cipher = Aes128::new(key.into());
    cipher.encrypt_block((&mut block).into());
    block
}

fn decrypt(key: &Block, mut block: Block) -> Block {
    let cipher = Aes128::new(key.into());
    cipher.decrypt_block((&mut block).into());
    block
}

fn xor(a: &Block, b: &Block) -> Block {
    let mut out = [0u8; 16];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}

fn not(a: &Block) -> Block {
    a.map(|b| !b)
}

/// 16 bytes from a slice of at most 16 (the rest zero).
fn block(bytes: &[u8]) -> Block {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    out
}

/// One secure-channel session between the CP and one reader.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    s_enc: Block,
    s_mac1: Block,
    s_mac2: Block,
    cp_random: [u8; 8],
    pd_random: [u8; 8],
    /// The MAC of the last command (the IV of the next reply's MAC).
    c_mac: Block,
    /// The MAC of the last reply (the IV of the next command's MAC); R-MAC-I to begin with.
    r_mac: Block,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never leave through a log line.
        f.write_str("Session([REDACTED])")
    }
}

impl Session {
    /// The session keys, from the reader's SCBK, the CP's random (RND.A) and the reader's (RND.B):
    /// E(SCBK, `01 82` ‖ RND.A[0..6] ‖ zeros) for S-ENC, `01 01` for S-MAC1, `01 02` for S-MAC2.
    pub fn new(scbk: &Block, cp_random: [u8; 8], pd_random: [u8; 8]) -> Session {
        let key = |kind: [u8; 2]| {
            let mut input = [0u8; 16];
            let (head, rest) = input.split_at_mut(2);
            head.copy_from_slice(&kind);
            // The first six bytes of RND.A, then zeros.
            for (o, r) in rest.iter_mut().zip(cp_random).take(6) {
                *o = r;
            }
            encrypt(scbk, input)
        };
        Session {
            s_enc: key([0x01, 0x82]),
            s_mac1: key([0x01, 0x01]),
            s_mac2: key([0x01, 0x02]),
            cp_random,
            pd_random,
            c_mac: [0; 16],
            r_mac: [0; 16],
        }
    }

    fn randoms(first: [u8; 8], second: [u8; 8]) -> Block {
        let mut out = [0u8; 16];
        let (a, b) = out.split_at_mut(8);
        a.copy_from_slice(&first);
        b.copy_from_slice(&second);
        out
    }

    /// The reader's proof that it holds the key: E(S-ENC, RND.A ‖ RND.B).
    pub fn client_cryptogram(&self) -> Block {
        encrypt(&self.s_enc, Self::randoms(self.cp_random, self.pd_random))
    }

    /// The CP's proof: E(S-ENC, RND.B ‖ RND.A).
    pub fn host_cryptogram(&self) -> Block {
        encrypt(&self.s_enc, Self::randoms(self.pd_random, self.cp_random))
    }

    /// Whether a client cryptogram is the reader's true one (in constant time).
    pub fn client_cryptogram_matches(&self, presented: &[u8]) -> bool {
        let expected = self.client_cryptogram();
        presented.len() == 16 && presented.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// The initial R-MAC, E(S-MAC2, E(S-MAC1, host cryptogram)), which starts the MAC chain.
    pub fn start_chain(&mut self) -> Block {
        self.r_mac = encrypt(&self.s_mac2, encrypt(&self.s_mac1, self.host_cryptogram()));
        self.r_mac
    }

    /// The MAC of a packet's bytes (SOM through the data), chained: a command's on the last
    /// reply's MAC, a reply's on the last command's. Returns the 4 bytes sent.
    pub fn mac(&mut self, command: bool, bytes: &[u8]) -> [u8; 4] {
        let mut iv = if command { self.r_mac } else { self.c_mac };
        let blocks: Vec<&[u8]> = bytes.chunks(16).collect();
        let (last, body) = match blocks.split_last() {
            Some((last, body)) => (*last, body),
            None => (&[][..], &[][..]),
        };
        for chunk in body {
            iv = encrypt(&self.s_mac1, xor(&block(chunk), &iv));
        }
        let mut final_block = block(last);
        if last.len() < 16
            && let Some(marker) = final_block.get_mut(last.len())
        {
            *marker = EOM;
        }
        let mac = encrypt(&self.s_mac2, xor(&final_block, &iv));
        if command {
            self.c_mac = mac;
        } else {
            self.r_mac = mac;
        }
        let [a, b, c, d, ..] = mac;
        [a, b, c, d]
    }

    /// A packet's data, padded (0x80, zeros) and encrypted with S-ENC in CBC; the IV is the
    /// bitwise NOT of the other side's last MAC.
    pub fn encrypt_data(&self, command: bool, data: &[u8]) -> Vec<u8> {
        let mut padded = data.to_vec();
        padded.push(EOM);
        while !padded.len().is_multiple_of(16) {
            padded.push(0);
        }
        let mut iv = not(if command { &self.r_mac } else { &self.c_mac });
        let mut out = Vec::with_capacity(padded.len());
        for chunk in padded.chunks(16) {
            iv = encrypt(&self.s_enc, xor(&block(chunk), &iv));
            out.extend_from_slice(&iv);
        }
        out
    }

    /// The data of a packet from the other side, decrypted and its padding removed; `None` if it
    /// is not whole blocks or its padding is wrong (a wrong key, or a damaged packet).
    pub fn decrypt_data(&self, command: bool, data: &[u8]) -> Option<Vec<u8>> {
        if data.is_empty() || !data.len().is_multiple_of(16) {
            return None;
        }
        let mut iv = not(if command { &self.r_mac } else { &self.c_mac });
        let mut out = Vec::with_capacity(data.len());
        for chunk in data.chunks(16) {
            let cipher = block(chunk);
            out.extend_from_slice(&xor(&decrypt(&self.s_enc, cipher), &iv));
            iv = cipher;
        }
        while out.last() == Some(&0) {
            out.pop();
        }
        (out.pop() == Some(EOM)).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace().filter_map(|b| u8::from_str_radix(b, 16).ok()).collect()
    }

    fn block16(text: &str) -> Block {
        block(&hex(text))
    }

    const CP_RANDOM: [u8; 8] = [0xB0, 0xB1, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7];
    const PD_RANDOM: [u8; 8] = [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7];

    #[test]
    fn annex_e_session_keys_cryptograms_and_initial_rmac() {
        let mut session = Session::new(&SCBK_D, CP_RANDOM, PD_RANDOM);
        assert_eq!(session.s_mac1, block16("5E 86 C6 76 60 3B DE E2 D8 BE AF E1 78 63 73 32"));
        assert_eq!(session.s_mac2, block16("6F DA 86 E8 57 77 7E 81 13 20 35 75 82 39 17 2E"));
        assert_eq!(session.s_enc, block16("BF 8D C2 A8 32 9A CB 8C 67 C6 D0 CD 9A 45 16 82"));
        assert_eq!(session.host_cryptogram(), block16("26 D3 35 6E 07 76 2D 26 28 01 FC 8E 66 65 A8 91"));
        assert_eq!(session.client_cryptogram(), block16("FD E5 D2 F4 28 EC 16 31 24 71 EA 3C 02 BD 77 96"));
        assert!(session.client_cryptogram_matches(&hex("FD E5 D2 F4 28 EC 16 31 24 71 EA 3C 02 BD 77 96")));
        assert!(!session.client_cryptogram_matches(&hex("FD E5 D2 F4 28 EC 16 31 24 71 EA 3C 02 BD 77 97")));
        assert_eq!(session.start_chain(), block16("B2 A3 00 57 EB 98 BA 22 29 EC 1F 87 56 62 B5 24"));
        assert_eq!(format!("{session:?}"), "Session([REDACTED])");
    }

    /// libosdp's vectors: S-MAC1 = S-MAC2 = S-ENC = the NIST SP 800-38A key, the chain's IV (or
    /// the NOT of it, for data) the NIST IV.
    fn nist_session(command: bool) -> Session {
        let key = block16("2b 7e 15 16 28 ae d2 a6 ab f7 15 88 09 cf 4f 3c");
        let iv = block16("00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f");
        let mut session = Session::new(&key, [0; 8], [0; 8]);
        (session.s_enc, session.s_mac1, session.s_mac2) = (key, key, key);
        if command {
            session.r_mac = iv;
        } else {
            session.c_mac = iv;
        }
        session
    }

    const PLAIN_4: &str = "6b c1 be e2 2e 40 9f 96 e9 3d 7e 11 73 93 17 2a ae 2d 8a 57 1e 03 ac 9c 9e b7 6f ac 45 af 8e 51 \
                           30 c8 1c 46 a3 5c e4 11 e5 fb c1 19 1a 0a 52 ef f6 9f 24 45 df 4f 9b 17 ad 2b 41 7b e6 6c 37 10";

    #[test]
    fn the_mac_chain_matches_libosdp() {
        let plain = hex(PLAIN_4);
        let mut session = nist_session(true);
        assert_eq!(session.mac(true, plain.get(..16).unwrap_or_default()), [0x76, 0x49, 0xab, 0xac]);
        assert_eq!(session.c_mac, block16("76 49 ab ac 81 19 b2 46 ce e9 8e 9b 12 e9 19 7d"));
        let mut session = nist_session(true);
        session.mac(true, &plain);
        assert_eq!(session.c_mac, block16("3f f1 ca a1 68 1f ac 09 12 0e ca 30 75 86 e1 a7"));
        let mut session = nist_session(false);
        session.mac(false, plain.get(..16).unwrap_or_default());
        assert_eq!(session.r_mac, block16("76 49 ab ac 81 19 b2 46 ce e9 8e 9b 12 e9 19 7d"));
        let mut session = nist_session(true);
        session.mac(true, &hex("00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e"));
        assert_eq!(session.c_mac, block16("c5 31 1f 3d 23 d0 86 ea 86 f5 ee 7f 85 24 7b 40"));
    }

    #[test]
    fn data_encryption_matches_libosdp_and_round_trips() {
        let data_session = |command: bool| {
            let mut session = nist_session(command);
            // The data IV is NOT(the other side's MAC): set that MAC to NOT(the NIST IV).
            let iv = block16("00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f");
            if command {
                session.r_mac = not(&iv);
            } else {
                session.c_mac = not(&iv);
            }
            session
        };
        let fifteen = hex("00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e");
        let sixteen = hex("00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f");
        let session = data_session(true);
        assert_eq!(session.encrypt_data(true, &fifteen), hex("c5 31 1f 3d 23 d0 86 ea 86 f5 ee 7f 85 24 7b 40"));
        assert_eq!(session.encrypt_data(true, &[]), hex("4c 08 22 0c 79 d9 19 10 22 dc 66 74 87 4c ea f8"));
        let session = data_session(false);
        let encrypted = session.encrypt_data(false, &sixteen);
        assert_eq!(
            encrypted,
            hex("7d f7 6b 0c 1a b8 99 b3 3e 42 f0 47 b9 1b 54 6f e2 fe 5b d6 c1 df cd d1 91 24 f0 3e 1a 13 4d 3b")
        );
        assert_eq!(session.decrypt_data(false, &encrypted), Some(sixteen));
        let session = data_session(true);
        assert_eq!(session.decrypt_data(true, &session.encrypt_data(true, &fifteen)), Some(fifteen));
        assert_eq!(session.decrypt_data(true, &session.encrypt_data(true, &[])), Some(Vec::new()));
        // A wrong key or damaged data fails its padding, or is not whole blocks.
        let other = Session::new(&SCBK_D, CP_RANDOM, PD_RANDOM);
        assert_eq!(other.decrypt_data(false, &encrypted), None);
        assert_eq!(session.decrypt_data(true, &[0u8; 15]), None);
    }
}
