//! Bytes off an OSDP bus: every packet the decoder finds in them is read as a reply; nothing may
//! panic, a decoded packet encodes back to the same bytes, and every reply that parses encodes
//! back to what it parsed from. The same bytes are also opened as secure-channel packets, with
//! and without an established channel (the MAC and decryption paths).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_adapters::osdp::{DecodeError, Reply, decode};
use portcullis_adapters::osdp_sc::{SCBK_D, Session, open};

fuzz_target!(|data: &[u8]| {
    let mut session = Session::new(&SCBK_D, [1; 8], [2; 8]);
    session.start_chain();
    let _ = open(Some(&mut session), false, data);
    let _ = open(Some(&mut session), true, data);
    let _ = open(None, false, data);
    let mut rest = data;
    while !rest.is_empty() {
        match decode(rest) {
            Ok((packet, used)) => {
                let start = used - packet.encode(false).len();
                assert_eq!(rest.get(start..used), Some(packet.encode(false).as_slice()));
                if let Ok(reply) = Reply::parse(packet.code, &packet.data) {
                    let (code, again) = reply.encode();
                    assert_eq!(Reply::parse(code, &again), Ok(reply));
                }
                rest = rest.get(used..).unwrap_or_default();
            }
            Err(DecodeError::Bad { skip, .. } | DecodeError::Secure { skip }) => {
                rest = rest.get(skip.max(1)..).unwrap_or_default();
            }
            Err(DecodeError::Incomplete) => break,
        }
    }
});
