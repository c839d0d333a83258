#![no_main]
// A1111 prompt syntax; see tools/fuzz-entry (`prompt`) for what it drives.
libfuzzer_sys::fuzz_target!(|data: &[u8]| animatediff_fuzz_entry::prompt(data));
