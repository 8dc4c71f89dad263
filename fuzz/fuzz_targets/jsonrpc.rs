//! The App API's JSON-RPC framing and every method's params.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        agentbus_daemon::rpc::methods::fuzz_frame(text);
    }
});
