//! The manifest parser and validator: any bytes as a YAML file must give pods or an error, never
//! a panic, a hang or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = podkit::spec::parse("fuzz.yaml", text);
    }
});
