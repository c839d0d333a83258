#![no_main]
// The `npy` parser; see tools/fuzz-entry (`npy`) for what it drives.
libfuzzer_sys::fuzz_target!(|data: &[u8]| animatediff_fuzz_entry::npy(data));
