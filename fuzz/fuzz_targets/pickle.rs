#![no_main]
// The `pickle` parser; see tools/fuzz-entry (`pickle_vm`) for what it drives.
libfuzzer_sys::fuzz_target!(|data: &[u8]| animatediff_fuzz_entry::pickle_vm(data));
