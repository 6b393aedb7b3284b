#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tunnel_tests::fuzzing::path_normalize(data));
