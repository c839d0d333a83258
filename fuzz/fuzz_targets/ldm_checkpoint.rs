#![no_main]
// The `ldm_checkpoint` parser; see tools/fuzz-entry (`ldm_checkpoint`) for what it drives.
libfuzzer_sys::fuzz_target!(|data: &[u8]| animatediff_fuzz_entry::ldm_checkpoint(data));
