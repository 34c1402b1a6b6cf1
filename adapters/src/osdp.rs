//! OSDP v2.2 framing and the messages a Control Panel exchanges with its readers (PROTOCOLS.md):
//! packets with CRC-16 or checksum, sequence numbers, and the commands and replies the engine
//! uses (POLL, ID, CAP, LSTAT, OUT, LED, BUZ; ACK, NAK, PDID, PDCAP, RAW, KEYPAD, LSTATR, BUSY).
//!
//! Pure: bytes in, values out, no I/O. Decoding never panics: a packet that is cut short asks for
//! more bytes, one that is damaged is refused with a reason and the number of bytes to skip. The
//! secure channel's packets (a security block present) are recognized and refused as
//! [`DecodeError::Secure`] here; nothing is ever read from them as plain text.

use std::fmt;

/// Start of message.
pub const SOM: u8 = 0x53;
/// The mark byte some transports send before each packet.
pub const MARK: u8 = 0xFF;
/// The broadcast address.
pub const BROADCAST: u8 = 0x7F;
/// The smallest packet: SOM, ADDR, LEN×2, CTRL, CODE, checksum.
const MIN_LEN: usize = 7;
/// Packets larger than this are refused (the spec's own limit is a PD's receive buffer).
pub const MAX_LEN: usize = 1440;

/// CRC-16/AUG-CCITT: polynomial 0x1021, initial 0x1D0F, no reflection, no final xor.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0x1D0F;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// The 8-bit checksum: the two's complement of the byte sum.
pub fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)).wrapping_neg()
}

/// One plain OSDP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The PD's address, 0–0x7E (0x7F: broadcast).
    pub addr: u8,
    /// Set on a PD's reply (address bit 7 on the wire).
    pub reply: bool,
    /// Sequence number, 0–3.
    pub seq: u8,
    /// CRC-16 (else the 8-bit checksum).
    pub crc: bool,
    pub code: u8,
    pub data: Vec<u8>,
}

impl Packet {
    /// The packet's bytes, with the mark byte first when `mark`.
    pub fn encode(&self, mark: bool) -> Vec<u8> {
        let len = 6 + self.data.len() + if self.crc { 2 } else { 1 };
        let mut out = Vec::with_capacity(len + 1);
        if mark {
            out.push(MARK);
        }
        let start = out.len();
        let [len_lo, len_hi] = u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes();
        out.extend([SOM, (self.addr & 0x7F) | if self.reply { 0x80 } else { 0 }, len_lo, len_hi]);
        out.push((self.seq & 0x03) | if self.crc { 0x04 } else { 0 });
        out.push(self.code);
        out.extend_from_slice(&self.data);
        let body = out.get(start..).unwrap_or_default();
        if self.crc {
            let crc = crc16(body);
            out.extend(crc.to_le_bytes());
        } else {
            let sum = checksum(body);
            out.push(sum);
        }
        out
    }
}

/// Why bytes are not a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A packet has begun but not all of it is here yet.
    Incomplete,
    /// Not a packet: skip this many bytes and look again.
    Bad { skip: usize, reason: &'static str },
    /// A secure-channel packet (security block present): this decoder reads plain packets only.
    Secure { skip: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete => f.write_str("packet incomplete"),
            DecodeError::Bad { reason, .. } => write!(f, "bad packet: {reason}"),
            DecodeError::Secure { .. } => f.write_str("a secure-channel packet where a plain one was expected"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A packet whose length and CRC (or checksum) hold, not yet read further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub addr: u8,
    pub reply: bool,
    pub seq: u8,
    pub crc: bool,
    /// A security block follows the control byte (the secure channel).
    pub secure: bool,
    /// The packet from SOM up to its CRC or checksum (what a MAC covers, MAC included).
    pub body: &'a [u8],
}

/// Finds one whole, intact packet at the start of `buf` (mark bytes and noise before SOM are
/// skipped); returns it and how many bytes it took.
pub fn frame(buf: &[u8]) -> Result<(Frame<'_>, usize), DecodeError> {
    let Some(start) = buf.iter().position(|&b| b == SOM) else {
        return if buf.is_empty() {
            Err(DecodeError::Incomplete)
        } else {
            Err(DecodeError::Bad { skip: buf.len(), reason: "no start of message" })
        };
    };
    let packet = buf.get(start..).unwrap_or_default();
    let (Some(&addr), Some(&lo), Some(&hi), Some(&ctrl)) = (packet.get(1), packet.get(2), packet.get(3), packet.get(4))
    else {
        return Err(DecodeError::Incomplete);
    };
    let bad = |reason| DecodeError::Bad { skip: start + 1, reason };
    let len = usize::from(u16::from_le_bytes([lo, hi]));
    if !(MIN_LEN..=MAX_LEN).contains(&len) {
        return Err(bad("length out of range"));
    }
    let Some(whole) = packet.get(..len) else { return Err(DecodeError::Incomplete) };
    let crc = ctrl & 0x04 != 0;
    let trailer = if crc { 2 } else { 1 };
    let (body, check) = whole.split_at(len - trailer);
    let intact = match check {
        [lo, hi] if crc => crc16(body) == u16::from_le_bytes([*lo, *hi]),
        [sum] => checksum(body) == *sum,
        _ => false,
    };
    if !intact {
        return Err(bad(if crc { "CRC mismatch" } else { "checksum mismatch" }));
    }
    if ctrl & 0xF0 != 0 {
        return Err(DecodeError::Bad { skip: start + len, reason: "reserved control bits set" });
    }
    let frame =
        Frame { addr: addr & 0x7F, reply: addr & 0x80 != 0, seq: ctrl & 0x03, crc, secure: ctrl & 0x08 != 0, body };
    Ok((frame, start + len))
}

/// Reads one plain packet from the start of `buf` (mark bytes and noise before SOM are skipped);
/// returns it and how many bytes it took. A secure-channel packet is [`DecodeError::Secure`]
/// (`osdp_sc::open` reads those).
pub fn decode(buf: &[u8]) -> Result<(Packet, usize), DecodeError> {
    let (frame, used) = frame(buf)?;
    if frame.secure {
        return Err(DecodeError::Secure { skip: used });
    }
    let Some((&code, data)) = frame.body.get(5..).and_then(<[u8]>::split_first) else {
        return Err(DecodeError::Bad { skip: used, reason: "no command code" });
    };
    let packet =
        Packet { addr: frame.addr, reply: frame.reply, seq: frame.seq, crc: frame.crc, code, data: data.to_vec() };
    Ok((packet, used))
}

/// LED colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Off = 0,
    Red = 1,
    Green = 2,
    Amber = 3,
    Blue = 4,
}

/// What the Control Panel asks of a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Poll,
    Id,
    Cap,
    /// The reader's local status: tamper and power.
    LocalStatus,
    /// Give the reader a new secure-channel key (only ever sent over the secure channel).
    KeySet {
        scbk: [u8; 16],
    },
    /// Output `output` on (relay) for `timer_100ms` tenths of a second, then back off.
    Pulse {
        output: u8,
        timer_100ms: u16,
    },
    /// LED `led` of reader 0 lit `colour` for `timer_100ms`, then back to off.
    Led {
        led: u8,
        colour: Colour,
        timer_100ms: u16,
    },
    /// The buzzer: `count` beeps of `on_100ms` on and `off_100ms` off.
    Buzz {
        on_100ms: u8,
        off_100ms: u8,
        count: u8,
    },
}

impl Command {
    pub fn code(&self) -> u8 {
        match self {
            Command::Poll => 0x60,
            Command::Id => 0x61,
            Command::Cap => 0x62,
            Command::LocalStatus => 0x64,
            Command::KeySet { .. } => 0x75,
            Command::Pulse { .. } => 0x68,
            Command::Led { .. } => 0x69,
            Command::Buzz { .. } => 0x6A,
        }
    }

    pub fn data(&self) -> Vec<u8> {
        match *self {
            Command::Poll | Command::LocalStatus => Vec::new(),
            // Key type 1 (SCBK), 16 bytes.
            Command::KeySet { scbk } => {
                let mut data = vec![0x01, 16];
                data.extend_from_slice(&scbk);
                data
            }
            Command::Id | Command::Cap => vec![0x00],
            Command::Pulse { output, timer_100ms } => {
                let [lo, hi] = timer_100ms.to_le_bytes();
                // Control code 5: temporary ON, then back to its permanent state.
                vec![output, 0x05, lo, hi]
            }
            Command::Led { led, colour, timer_100ms } => {
                let [lo, hi] = timer_100ms.to_le_bytes();
                vec![
                    0x00,
                    led, // reader, LED
                    0x02,
                    0x01,
                    0x00,
                    colour as u8,
                    Colour::Off as u8,
                    lo,
                    hi, // temporary: steady colour
                    0x01,
                    0x01,
                    0x00,
                    Colour::Off as u8,
                    Colour::Off as u8, // permanent: off
                ]
            }
            Command::Buzz { on_100ms, off_100ms, count } => vec![0x00, 0x02, on_100ms, off_100ms, count],
        }
    }

    /// The command as a packet to `addr` with sequence `seq` (CRC-16).
    pub fn packet(&self, addr: u8, seq: u8) -> Packet {
        Packet { addr, reply: false, seq, crc: true, code: self.code(), data: self.data() }
    }
}

/// What a reader answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ack,
    Nak(u8),
    PdId {
        vendor: [u8; 3],
        model: u8,
        version: u8,
        serial: u32,
        firmware: [u8; 3],
    },
    PdCap(Vec<[u8; 3]>),
    /// A card read: its bits, first on the wire first.
    Raw {
        reader: u8,
        format: u8,
        bits: Vec<bool>,
    },
    /// Keys pressed, as ASCII.
    Keypad {
        reader: u8,
        keys: Vec<u8>,
    },
    /// The reader's local status: its tamper switch and its power.
    LocalStatus {
        tamper: bool,
        power_failure: bool,
    },
    Busy,
    /// Any other reply, kept as it came.
    Other {
        code: u8,
        data: Vec<u8>,
    },
}

impl Reply {
    /// Reads a reply packet's code and data; a reply too short for its kind is an error.
    pub fn parse(code: u8, data: &[u8]) -> Result<Reply, &'static str> {
        Ok(match code {
            0x40 => Reply::Ack,
            0x41 => Reply::Nak(data.first().copied().unwrap_or(0)),
            0x45 => match data {
                [v0, v1, v2, model, version, s0, s1, s2, s3, f0, f1, f2, ..] => Reply::PdId {
                    vendor: [*v0, *v1, *v2],
                    model: *model,
                    version: *version,
                    serial: u32::from_le_bytes([*s0, *s1, *s2, *s3]),
                    firmware: [*f0, *f1, *f2],
                },
                _ => return Err("PDID shorter than 12 bytes"),
            },
            0x46 => Reply::PdCap(
                data.chunks_exact(3)
                    .filter_map(|c| if let [a, b, c] = c { Some([*a, *b, *c]) } else { None })
                    .collect(),
            ),
            0x50 => match data {
                [reader, format, lo, hi, bytes @ ..] => {
                    let count = usize::from(u16::from_le_bytes([*lo, *hi]));
                    if bytes.len() * 8 < count {
                        return Err("RAW with fewer bytes than its bit count");
                    }
                    let bits =
                        (0..count).map(|i| bytes.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0)).collect();
                    Reply::Raw { reader: *reader, format: *format, bits }
                }
                _ => return Err("RAW shorter than 4 bytes"),
            },
            0x53 => match data {
                [reader, count, keys @ ..] if keys.len() >= usize::from(*count) => Reply::Keypad {
                    reader: *reader,
                    keys: keys.get(..usize::from(*count)).unwrap_or_default().to_vec(),
                },
                _ => return Err("KEYPAD shorter than its count"),
            },
            0x48 => match data {
                [tamper, power, ..] => Reply::LocalStatus { tamper: *tamper != 0, power_failure: *power != 0 },
                _ => return Err("LSTATR shorter than 2 bytes"),
            },
            0x79 => Reply::Busy,
            code => Reply::Other { code, data: data.to_vec() },
        })
    }

    /// The reply's code and data (a reader's side; for simulators and tests).
    pub fn encode(&self) -> (u8, Vec<u8>) {
        match self {
            Reply::Ack => (0x40, Vec::new()),
            Reply::Nak(code) => (0x41, vec![*code]),
            Reply::PdId { vendor, model, version, serial, firmware } => {
                let mut data = vendor.to_vec();
                data.extend([*model, *version]);
                data.extend(serial.to_le_bytes());
                data.extend(firmware);
                (0x45, data)
            }
            Reply::PdCap(caps) => (0x46, caps.iter().flatten().copied().collect()),
            Reply::Raw { reader, format, bits } => {
                let [lo, hi] = u16::try_from(bits.len()).unwrap_or(u16::MAX).to_le_bytes();
                let mut data = vec![*reader, *format, lo, hi];
                data.extend(bits.chunks(8).map(|byte| {
                    byte.iter().enumerate().fold(0u8, |acc, (i, bit)| if *bit { acc | (0x80 >> i) } else { acc })
                }));
                (0x50, data)
            }
            Reply::Keypad { reader, keys } => {
                let mut data = vec![*reader, u8::try_from(keys.len()).unwrap_or(u8::MAX)];
                data.extend(keys);
                (0x53, data)
            }
            Reply::LocalStatus { tamper, power_failure } => (0x48, vec![u8::from(*tamper), u8::from(*power_failure)]),
            Reply::Busy => (0x79, Vec::new()),
            Reply::Other { code, data } => (*code, data.clone()),
        }
    }
}

/// The next sequence number after `seq`: 1, 2, 3, 1, … (0 only starts a conversation).
pub fn next_seq(seq: u8) -> u8 {
    if seq >= 3 { 1 } else { seq + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wiegand;

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace().filter_map(|b| u8::from_str_radix(b, 16).ok()).collect()
    }

    #[test]
    fn crc_and_checksum_match_the_vectors() {
        assert_eq!(crc16(b"123456789"), 0xE5CC);
        for (body, trailer) in [
            ("53 7F 0D 00 04 6E 00 80 25 00 00", "6E 38"),
            ("53 00 09 00 04 61 00", "C0 66"),
            ("53 65 08 00 04 60", "60 90"),
            ("53 00 08 00 06 60", "89 CC"),
        ] {
            assert_eq!(crc16(&hex(body)).to_le_bytes().to_vec(), hex(trailer), "{body}");
        }
        assert_eq!(checksum(&hex("53 00 07 00 02 60")), 0x44);
    }

    #[test]
    fn the_recorded_exchange_encodes_and_decodes_byte_for_byte() -> Result<(), Box<dyn std::error::Error>> {
        let id = Command::Id.packet(0x65, 0);
        assert_eq!(id.encode(true), hex("ff 53 65 09 00 04 61 00 d9 7a"));

        let wire = hex("ff 53 e5 10 00 06 50 00 01 1a 00 bd 88 eb 80 74 e3");
        let (packet, used) = decode(&wire)?;
        assert_eq!(used, wire.len());
        assert_eq!((packet.addr, packet.reply, packet.seq, packet.crc), (0x65, true, 2, true));
        let Ok(Reply::Raw { reader: 0, format: 1, bits }) = Reply::parse(packet.code, &packet.data) else {
            return Err(format!("not a RAW reply: {packet:?}").into());
        };
        assert_eq!(bits.len(), 26);
        let cards = wiegand::decode(&bits)?;
        assert!(cards.iter().any(|c| c.facility == 123 && c.number == 4567), "{cards:?}");
        assert_eq!(packet.encode(true), wire);

        let out = Command::Pulse { output: 0, timer_100ms: 30 }.packet(0x65, 3);
        assert_eq!(out.encode(true), hex("ff 53 65 0c 00 07 68 00 05 1e 00 d8 55"));
        Ok(())
    }

    #[test]
    fn damaged_cut_short_and_secure_packets_are_refused_without_panicking() -> Result<(), DecodeError> {
        let good = Command::Poll.packet(1, 1).encode(false);
        for cut in 0..good.len() {
            assert_eq!(decode(good.get(..cut).unwrap_or_default()), Err(DecodeError::Incomplete), "cut at {cut}");
        }
        let mut flipped = good.clone();
        if let Some(b) = flipped.get_mut(5) {
            *b ^= 0x01;
        }
        assert!(matches!(decode(&flipped), Err(DecodeError::Bad { skip: 1, .. })));
        assert!(matches!(
            decode(&hex("53 00 03 00 04 60 00 00")),
            Err(DecodeError::Bad { reason: "length out of range", .. })
        ));
        let mut secure = Packet { addr: 1, reply: true, seq: 1, crc: true, code: 0x40, data: vec![] }.encode(false);
        if let Some(ctrl) = secure.get_mut(4) {
            *ctrl |= 0x08;
        }
        let len = secure.len();
        let body = secure.get(..len - 2).unwrap_or_default().to_vec();
        secure.truncate(len - 2);
        secure.extend(crc16(&body).to_le_bytes());
        assert_eq!(decode(&secure), Err(DecodeError::Secure { skip: len }));
        // Noise before a packet is skipped; two packets in one buffer are read one at a time.
        let mut stream = vec![0x00, 0x12];
        stream.extend(Command::Poll.packet(2, 1).encode(true));
        stream.extend(Command::Id.packet(2, 2).encode(false));
        let (first, used) = decode(&stream)?;
        assert_eq!((first.code, first.seq), (0x60, 1));
        let (second, _) = decode(stream.get(used..).unwrap_or_default())?;
        assert_eq!((second.code, second.seq), (0x61, 2));
        Ok(())
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Ack,
            Reply::Nak(3),
            Reply::PdId { vendor: [0x5c, 0x26, 0x23], model: 1, version: 2, serial: 0xdead_beef, firmware: [1, 2, 3] },
            Reply::PdCap(vec![[1, 2, 1], [4, 1, 0]]),
            Reply::Raw { reader: 0, format: 1, bits: vec![true, false, true, true, false, false, true, false, true] },
            Reply::Keypad { reader: 0, keys: b"1234#".to_vec() },
            Reply::LocalStatus { tamper: true, power_failure: false },
            Reply::Busy,
        ] {
            let (code, data) = reply.encode();
            assert_eq!(Reply::parse(code, &data), Ok(reply));
        }
        assert_eq!(next_seq(0), 1);
        assert_eq!(next_seq(3), 1);
    }
}
