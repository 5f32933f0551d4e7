//! portfwd's argument parsers (kubectl's `[LOCAL:]REMOTE[/PROTOCOL]`, `--address`, durations,
//! `--proxy-protocol`): any text gives a value or an error, never a panic; a port mapping that
//! parses prints back to a form that parses to the same mapping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portfwd::{ListenAddress, PortMapping, ProxyProtocol, parse_duration};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mapping) = text.parse::<PortMapping>() {
        assert_ne!(mapping.remote, 0, "{text:?}");
        let printed = mapping.to_string();
        assert_eq!(
            printed.parse::<PortMapping>().ok(),
            Some(mapping),
            "{text:?} -> {printed:?}"
        );
    }
    if let Ok(address) = text.parse::<ListenAddress>() {
        let printed = address.to_string();
        assert_eq!(
            printed.parse::<ListenAddress>().ok(),
            Some(address),
            "{text:?}"
        );
    }
    let _ = parse_duration(text);
    if let Ok(version) = text.parse::<ProxyProtocol>() {
        assert_eq!(
            version.to_string().parse::<ProxyProtocol>().ok(),
            Some(version)
        );
    }
});
