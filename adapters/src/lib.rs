//! Portcullis hardware adapters: they translate what readers and panels send into decision calls,
//! and verdicts back into what the hardware understands.
//!
//! Protocol code here is free of actix and of the database; it imports no other Portcullis crate.
//!
//! - [`credential`] — QR payloads, PINs and card values: read once, for every edge and for issuance.
//! - [`wiegand`] — the Wiegand card formats (H10301, H10306, H10304, H10302): decoding with parity
//!   checks, and encoding.
//!
//! - [`osdp_sc`] — the OSDP secure channel's cryptography (session keys, cryptograms, MAC chain,
//!   data encryption), checked against the SIA Annex E vectors.
//! - [`osdp`] — OSDP v2.2 packets (CRC-16 and checksum), and the commands and replies of a Control
//!   Panel: polling, identification, card reads and keypads, relay, LED and buzzer.
//!
//! - [`uhppote`] — UHPPOTE UT0311 controllers' UDP messages (card table, status, events), and
//!   [`uhppote_sim`], a virtual controller.
//!
//! The OSDP Control Panel's connection to a bus and the HTTP dialects of existing panels build on
//! these (see `../shared/PROTOCOLS.md`).

pub mod credential;
pub mod osdp;
pub mod osdp_bus;
pub mod osdp_pd;
pub mod osdp_sc;
pub mod uhppote;
pub mod uhppote_sim;
pub mod wiegand;
