#![no_main]
// The `prompt_config` parser; see tools/fuzz-entry (`prompt_config`) for what it drives.
libfuzzer_sys::fuzz_target!(|data: &[u8]| animatediff_fuzz_entry::prompt_config(data));
