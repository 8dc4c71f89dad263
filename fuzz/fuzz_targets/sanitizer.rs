//! The jekt sanitizer and marker: whatever the body and the sender's
//! name, one marker block of safe characters.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| agentbus_proto::jekt::fuzz_wrap(data));
