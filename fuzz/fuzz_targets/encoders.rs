#![no_main]
//! See fuzz/src/check.rs: the properties checked for every input.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vaultboot_fuzz::check::encoders(data);
});
