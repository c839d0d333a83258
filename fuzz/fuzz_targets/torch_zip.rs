#![no_main]
// The `torch_zip` parser; see tools/fuzz-entry (`torch_zip`) for what it drives.
libfuzzer_sys::fuzz_target!(|data: &[u8]| animatediff_fuzz_entry::torch_zip(data));
