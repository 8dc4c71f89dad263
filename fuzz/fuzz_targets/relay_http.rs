//! The relay's request head parser and chunked-body decoder.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| agentbus_relay::http::fuzz_request(data));
