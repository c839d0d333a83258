#![no_main]
// The `manifest` parser; see tools/fuzz-entry (`manifest`) for what it drives.
libfuzzer_sys::fuzz_target!(|data: &[u8]| animatediff_fuzz_entry::manifest(data));
