//! The live stream's query string (`?gates=…&since=…&access_token=…`), as the WebSocket route
//! reads it. Nothing may panic.
#![no_main]

use actix_web::web::Query;
use libfuzzer_sys::fuzz_target;
use portcullis::http::routes::stream::StreamQuery;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(query) = Query::<StreamQuery>::from_query(text) {
        let _ = query.gate_filter();
    }
});
