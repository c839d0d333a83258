#![no_main]
// The `motion_module` parser; see tools/fuzz-entry (`motion_module`) for what it drives.
libfuzzer_sys::fuzz_target!(|data: &[u8]| animatediff_fuzz_entry::motion_module(data));
