//! Wiegand card formats. Bit 1 is the first bit on the wire; the first and last bits are parity.
//!
//! | format | bits | facility | card number | even parity | odd parity |
//! |--------|------|----------|-------------|-------------|------------|
//! | H10301 | 26   | 2–9      | 10–25       | 2–13        | 14–25      |
//! | H10306 | 34   | 2–17     | 18–33       | 2–17        | 18–33      |
//! | H10304 | 37   | 2–17     | 18–36       | 2–19        | 19–36      |
//! | H10302 | 37   | —        | 2–36        | 2–19        | 19–36      |
//!
//! H10304 and H10302 share length and parity layout, so a 37-bit frame decodes as both; the caller
//! looks up each candidate.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Format {
    H10301,
    H10306,
    H10304,
    H10302,
}

impl Format {
    pub fn bits(self) -> usize {
        match self {
            Format::H10301 => 26,
            Format::H10306 => 34,
            Format::H10304 | Format::H10302 => 37,
        }
    }

    /// Bit ranges (1-based, inclusive): facility, card number, even parity span, odd parity span.
    fn layout(self) -> Layout {
        match self {
            Format::H10301 => Layout { facility: Some((2, 9)), number: (10, 25), even: (2, 13), odd: (14, 25) },
            Format::H10306 => Layout { facility: Some((2, 17)), number: (18, 33), even: (2, 17), odd: (18, 33) },
            Format::H10304 => Layout { facility: Some((2, 17)), number: (18, 36), even: (2, 19), odd: (19, 36) },
            Format::H10302 => Layout { facility: None, number: (2, 36), even: (2, 19), odd: (19, 36) },
        }
    }

    pub fn max_facility(self) -> u64 {
        self.layout().facility.map_or(0, |(a, b)| (1 << (b - a + 1)) - 1)
    }

    pub fn max_number(self) -> u64 {
        let (a, b) = self.layout().number;
        (1 << (b - a + 1)) - 1
    }

    /// Whether the format carries a facility code (all but H10302).
    pub fn has_facility(self) -> bool {
        self.layout().facility.is_some()
    }
}

struct Layout {
    facility: Option<(usize, usize)>,
    number: (usize, usize),
    even: (usize, usize),
    odd: (usize, usize),
}

/// A card as read: format, facility code (0 for H10302) and card number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Card {
    pub format: Format,
    pub facility: u64,
    pub number: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WiegandError {
    #[error("a Wiegand frame holds only `0` and `1`, found `{0}`")]
    NotBinary(char),
    #[error("no supported card format is {0} bits long (26, 34 or 37)")]
    UnknownLength(usize),
    #[error("{0:?}: parity check failed")]
    Parity(Format),
    #[error("{format:?}: facility {facility} or card number {number} does not fit")]
    OutOfRange { format: Format, facility: u64, number: u64 },
}

/// Parses `"1011…"` into bits.
pub fn parse_bits(text: &str) -> Result<Vec<bool>, WiegandError> {
    text.chars()
        .map(|c| match c {
            '0' => Ok(false),
            '1' => Ok(true),
            other => Err(WiegandError::NotBinary(other)),
        })
        .collect()
}

/// Bits `from` to `to` (1-based, inclusive), empty when the frame is shorter.
fn span(bits: &[bool], (from, to): (usize, usize)) -> &[bool] {
    bits.get(from.saturating_sub(1)..to).unwrap_or_default()
}

fn field(bits: &[bool], range: (usize, usize)) -> u64 {
    span(bits, range).iter().fold(0, |acc, b| (acc << 1) | u64::from(*b))
}

fn ones(bits: &[bool], range: (usize, usize)) -> usize {
    span(bits, range).iter().filter(|b| **b).count()
}

/// Whether the frame's parity bits are right for `format` (bits.len() must match).
fn parity_ok(format: Format, bits: &[bool]) -> bool {
    let layout = format.layout();
    let (Some(&first), Some(&last)) = (bits.first(), bits.last()) else { return false };
    let even_ok = (ones(bits, layout.even) + usize::from(first)).is_multiple_of(2);
    let odd_ok = (ones(bits, layout.odd) + usize::from(last)) % 2 == 1;
    even_ok && odd_ok
}

/// Every reading of a frame: one card for 26 and 34 bits, two (H10304, H10302) for 37.
pub fn decode(bits: &[bool]) -> Result<Vec<Card>, WiegandError> {
    // All candidates of one length share the parity layout (the first's).
    let (parity, formats): (Format, &[Format]) = match bits.len() {
        26 => (Format::H10301, &[Format::H10301]),
        34 => (Format::H10306, &[Format::H10306]),
        37 => (Format::H10304, &[Format::H10304, Format::H10302]),
        n => return Err(WiegandError::UnknownLength(n)),
    };
    if !parity_ok(parity, bits) {
        return Err(WiegandError::Parity(parity));
    }
    Ok(formats
        .iter()
        .map(|&format| {
            let layout = format.layout();
            Card { format, facility: layout.facility.map_or(0, |f| field(bits, f)), number: field(bits, layout.number) }
        })
        .collect())
}

/// The frame for a card, parity included.
pub fn encode(card: Card) -> Result<Vec<bool>, WiegandError> {
    let format = card.format;
    if card.facility > format.max_facility() || card.number > format.max_number() {
        return Err(WiegandError::OutOfRange { format, facility: card.facility, number: card.number });
    }
    let layout = format.layout();
    let mut bits = vec![false; format.bits()];
    let mut put = |(from, to): (usize, usize), value: u64| {
        for (i, bit) in bits.get_mut(from.saturating_sub(1)..to).unwrap_or_default().iter_mut().enumerate() {
            let shift = to - from - i;
            *bit = (value >> shift) & 1 == 1;
        }
    };
    if let Some(f) = layout.facility {
        put(f, card.facility);
    }
    put(layout.number, card.number);
    let even = ones(&bits, layout.even) % 2 == 1;
    let odd = ones(&bits, layout.odd).is_multiple_of(2);
    if let Some(first) = bits.first_mut() {
        *first = even;
    }
    if let Some(last) = bits.last_mut() {
        *last = odd;
    }
    Ok(bits)
}

/// The frame as an integer, first bit most significant (how PROTOCOLS.md writes vectors).
pub fn to_u64(bits: &[bool]) -> u64 {
    bits.iter().fold(0, |acc, b| (acc << 1) | u64::from(*b))
}

/// `"1011…"`.
pub fn to_text(bits: &[bool]) -> String {
    bits.iter().map(|b| if *b { '1' } else { '0' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(value: u64, len: usize) -> Vec<bool> {
        (0..len).rev().map(|i| (value >> i) & 1 == 1).collect()
    }

    /// (format, facility, number, frame) from PROTOCOLS.md.
    const VECTORS: &[(Format, u64, u64, u64)] = &[
        (Format::H10301, 123, 4567, 0x2F623AE),
        (Format::H10301, 1, 1, 0x2020002),
        (Format::H10301, 255, 65535, 0x1FFFFFF),
        (Format::H10301, 0, 0, 0x0000001),
        (Format::H10306, 123, 4567, 0x0F623AF),
        (Format::H10306, 1, 1, 0x200020002),
        (Format::H10306, 65535, 65535, 0x1FFFFFFFF),
        (Format::H10306, 4660, 22136, 0x22468ACF1),
        (Format::H10304, 123, 4567, 0x0007B023AF),
        (Format::H10304, 1, 1, 0x1000100002),
        (Format::H10304, 65535, 524287, 0x0FFFFFFFFF),
        (Format::H10304, 4660, 300000, 0x01234927C0),
        (Format::H10302, 0, 4567, 0x00000023AF),
        (Format::H10302, 0, 1, 0x0000000002),
        (Format::H10302, 0, (1 << 35) - 1, 0x0FFFFFFFFF),
        (Format::H10302, 0, 123456789, 0x100EB79A2B),
    ];

    #[test]
    fn encodes_every_vector() {
        for &(format, facility, number, expected) in VECTORS {
            let bits = encode(Card { format, facility, number });
            assert_eq!(bits.as_deref().map(to_u64), Ok(expected), "{format:?} {facility}/{number}");
        }
    }

    #[test]
    fn decodes_every_vector() {
        for &(format, facility, number, value) in VECTORS {
            let cards = decode(&frame(value, format.bits()));
            let card = cards.as_ref().ok().and_then(|c| c.iter().find(|c| c.format == format).copied());
            assert_eq!(card, Some(Card { format, facility, number }), "{format:?} {value:#x}");
        }
    }

    #[test]
    fn the_osdp_raw_example_is_h10301_123_4567() {
        // RAW bytes `bd 88 eb 80`, 26 bits, MSB first, left-justified.
        let bytes = [0xbdu8, 0x88, 0xeb, 0x80];
        let bits: Vec<bool> =
            bytes.iter().flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1 == 1)).take(26).collect();
        assert_eq!(decode(&bits), Ok(vec![Card { format: Format::H10301, facility: 123, number: 4567 }]));
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        for &(format, _, _, value) in VECTORS.iter().filter(|v| v.0 != Format::H10302) {
            let good = frame(value, format.bits());
            for i in 0..good.len() {
                let mut bad = good.clone();
                bad[i] = !bad[i];
                assert!(matches!(decode(&bad), Err(WiegandError::Parity(_))), "{format:?} bit {i}");
            }
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert_eq!(parse_bits("10x1"), Err(WiegandError::NotBinary('x')));
        assert_eq!(decode(&[]), Err(WiegandError::UnknownLength(0)));
        assert_eq!(decode(&frame(0x2F623AE, 27)), Err(WiegandError::UnknownLength(27)));
        assert!(encode(Card { format: Format::H10301, facility: 256, number: 1 }).is_err());
        assert!(encode(Card { format: Format::H10301, facility: 1, number: 65536 }).is_err());
    }

    #[test]
    fn text_round_trip() {
        let text = "10111101100010001110101110";
        let bits = parse_bits(text).unwrap_or_default();
        assert_eq!(to_text(&bits), text);
        assert_eq!(to_u64(&bits), 0x2F623AE);
    }
}
