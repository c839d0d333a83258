#![no_main]
// The `embedding` reader; see tools/fuzz-entry (`embedding`) for what it drives.
libfuzzer_sys::fuzz_target!(|data: &[u8]| animatediff_fuzz_entry::embedding(data));
