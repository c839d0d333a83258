#![no_main]
// The `lora` parser; see tools/fuzz-entry (`lora`) for what it drives.
libfuzzer_sys::fuzz_target!(|data: &[u8]| animatediff_fuzz_entry::lora(data));
