//! Wiegand frames of any length and content: decoding never panics, and every card a frame
//! decodes to encodes back to that same frame (the parity bits included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_adapters::wiegand;

fuzz_target!(|data: &[u8]| {
    let Some((&len, bytes)) = data.split_first() else { return };
    let bits: Vec<bool> = bytes.iter().flat_map(|b| (0..8).map(move |i| b >> i & 1 == 1)).take(usize::from(len)).collect();
    let Ok(cards) = wiegand::decode(&bits) else { return };
    for card in cards {
        let again = wiegand::encode(card);
        assert_eq!(again.as_deref().ok(), Some(bits.as_slice()), "{card:?} does not encode back to its frame");
    }
    let text = wiegand::to_text(&bits);
    assert_eq!(wiegand::parse_bits(&text).ok().as_deref(), Some(bits.as_slice()));
});
