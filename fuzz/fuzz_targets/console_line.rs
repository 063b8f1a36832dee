#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| host::fuzzing::console_line(data));
