//! Fuzzes every parser entry point of lab-core with arbitrary bytes.
//!
//! Run with `cargo +nightly fuzz run parse` (install with `cargo install cargo-fuzz`). Beyond "never
//! panics", it checks that whatever is accepted survives a round trip unchanged, and that every refusal
//! carries at least one problem to show the client.
#![no_main]

use lab_core::parse::{parse_client_frame, parse_dashboard_request, parse_metrics_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_metrics_body(data) {
        Ok(metrics) => {
            let text = serde_json::to_string(&metrics).expect("accepted metrics serialize");
            assert_eq!(parse_metrics_body(text.as_bytes()).as_ref(), Ok(&metrics), "round trip of {text}");
        }
        Err(e) => assert!(!e.problems().is_empty(), "an error without details: {e:?}"),
    }
    if let Err(e) = parse_client_frame(data) {
        assert!(!e.problems().is_empty(), "an error without details: {e:?}");
    }
    if let Err(e) = parse_dashboard_request(data) {
        assert!(!e.problems().is_empty(), "an error without details: {e:?}");
    }
});
