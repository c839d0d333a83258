#![no_main]
// The `safetensors` parser; see tools/fuzz-entry (`safetensors`) for what it drives.
libfuzzer_sys::fuzz_target!(|data: &[u8]| animatediff_fuzz_entry::safetensors(data));
