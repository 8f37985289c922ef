//! Any bytes as an uploaded plugin: the checks run before compiling (is it
//! a component, how many instances, which imports) never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ward::sandbox::component::check_bytes(data);
});
