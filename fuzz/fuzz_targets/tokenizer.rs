#![no_main]
// The `tokenizer` parser; see tools/fuzz-entry (`tokenizer`) for what it drives.
libfuzzer_sys::fuzz_target!(|data: &[u8]| animatediff_fuzz_entry::tokenizer(data));
