//! UHPPOTE datagrams of any length and content, read as a controller's reply or report and as a
//! server's request: decoding never panics, and whatever decodes encodes back to a message that
//! decodes to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_adapters::uhppote::{Reply, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Reply::decode(data) {
        let again = Reply::decode(&message.body.encode(message.serial));
        assert_eq!(again.ok().map(|m| (m.serial, m.body)), Some((message.serial, message.body)));
    }
    if let Ok(message) = Request::decode(data) {
        let again = Request::decode(&message.body.encode(message.serial));
        assert_eq!(again.ok().map(|m| (m.serial, m.body)), Some((message.serial, message.body)));
    }
});
