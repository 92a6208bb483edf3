#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hvmem_fuzz::grant::run(data));
