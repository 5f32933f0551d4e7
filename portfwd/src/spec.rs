//! kubectl's port-forward syntax: `[LOCAL:]REMOTE[/PROTOCOL]` and `--address`, plus the
//! duration syntax (`200ms`, `10s`) of podkit's flags.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use crate::Error;

/// The transport of a forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// TCP: each connection is dialed anew inside the target.
    #[default]
    Tcp,
    /// UDP: one flow per client address, ended after an idle timeout.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One forwarded port: host port `local` (0: pick a free one) to port `remote` inside the
/// target.
///
/// Parses kubectl's forms: `8080:80`, `8080` (same port on both sides), `:80` and `0:80` (a
/// random local port), each optionally followed by `/tcp` or `/udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// The host port; 0 picks a free one (see [`crate::Listening`] for the one chosen).
    pub local: u16,
    /// The port inside the target's network namespace.
    pub remote: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl PortMapping {
    /// A TCP mapping from host port `local` to `remote` in the target.
    pub fn tcp(local: u16, remote: u16) -> Self {
        PortMapping {
            local,
            remote,
            protocol: Protocol::Tcp,
        }
    }

    /// A UDP mapping from host port `local` to `remote` in the target.
    pub fn udp(local: u16, remote: u16) -> Self {
        PortMapping {
            local,
            remote,
            protocol: Protocol::Udp,
        }
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.local, self.remote)?;
        if self.protocol == Protocol::Udp {
            f.write_str("/udp")?;
        }
        Ok(())
    }
}

impl FromStr for PortMapping {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        let invalid = |reason: &'static str| Error::InvalidPortMapping {
            spec: spec.to_owned(),
            reason,
        };
        let (ports, protocol) = match spec.rsplit_once('/') {
            None => (spec, Protocol::Tcp),
            Some((ports, proto)) => match proto.to_ascii_lowercase().as_str() {
                "tcp" => (ports, Protocol::Tcp),
                "udp" => (ports, Protocol::Udp),
                _ => return Err(invalid("the protocol must be tcp or udp")),
            },
        };
        let port = |text: &str, what: &'static str| -> Result<u16, Error> {
            text.parse::<u16>().map_err(|_| Error::InvalidPortMapping {
                spec: spec.to_owned(),
                reason: what,
            })
        };
        let (local, remote) = match ports.split_once(':') {
            None => {
                let port = port(ports, "expected [LOCAL:]REMOTE with ports from 1 to 65535")?;
                (port, port)
            }
            Some(("", remote)) => (0, port(remote, "the remote port must be 1 to 65535")?),
            Some((local, remote)) => (
                port(
                    local,
                    "the local port must be 0 to 65535 (0: pick a free one)",
                )?,
                port(remote, "the remote port must be 1 to 65535")?,
            ),
        };
        if remote == 0 {
            return Err(invalid("the remote port must be 1 to 65535"));
        }
        Ok(PortMapping {
            local,
            remote,
            protocol,
        })
    }
}

/// Where to listen on the host: kubectl's `--address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenAddress {
    /// `localhost`: 127.0.0.1 and ::1; forwarding works if either one binds.
    Localhost,
    /// One address, which must bind (`0.0.0.0` or `::` listen on every interface).
    Ip(IpAddr),
}

impl ListenAddress {
    /// The addresses to bind, and whether each must succeed.
    pub(crate) fn ips(self) -> Vec<IpAddr> {
        match self {
            ListenAddress::Localhost => vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            ListenAddress::Ip(ip) => vec![ip],
        }
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Localhost => f.write_str("localhost"),
            ListenAddress::Ip(ip) => ip.fmt(f),
        }
    }
}

impl FromStr for ListenAddress {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        if text.eq_ignore_ascii_case("localhost") {
            return Ok(ListenAddress::Localhost);
        }
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        bare.parse()
            .map(ListenAddress::Ip)
            .map_err(|_| Error::InvalidAddress {
                address: text.to_owned(),
            })
    }
}

/// Parses a duration as podkit's flags write them: a number and a unit among `ms`, `s`, `m`,
/// `h` (`200ms`, `10s`, `5m`); a bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, Error> {
    let invalid = || Error::InvalidDuration {
        text: text.to_owned(),
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => None,
    };
    millis.map(Duration::from_millis).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_port_forms() {
        let parse = |s: &str| s.parse::<PortMapping>();
        assert_eq!(parse("8080:80").ok(), Some(PortMapping::tcp(8080, 80)));
        assert_eq!(parse("8080").ok(), Some(PortMapping::tcp(8080, 8080)));
        assert_eq!(parse(":80").ok(), Some(PortMapping::tcp(0, 80)));
        assert_eq!(parse("0:80").ok(), Some(PortMapping::tcp(0, 80)));
        assert_eq!(parse("8053:53/udp").ok(), Some(PortMapping::udp(8053, 53)));
        assert_eq!(parse("53/UDP").ok(), Some(PortMapping::udp(53, 53)));
        assert_eq!(parse("80/tcp").ok(), Some(PortMapping::tcp(80, 80)));
        for bad in [
            "", "80:0", "0", "x:80", "80:", "70000:80", "80/sctp", "1:2:3",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn addresses() {
        let parse = |s: &str| s.parse::<ListenAddress>().ok();
        assert_eq!(parse("localhost"), Some(ListenAddress::Localhost));
        assert_eq!(
            parse("0.0.0.0"),
            Some(ListenAddress::Ip(Ipv4Addr::UNSPECIFIED.into()))
        );
        assert_eq!(
            parse("[::1]"),
            Some(ListenAddress::Ip(Ipv6Addr::LOCALHOST.into()))
        );
        assert_eq!(parse("example.com"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("200ms").ok(),
            Some(Duration::from_millis(200))
        );
        assert_eq!(parse_duration("10s").ok(), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("0").ok(), Some(Duration::ZERO));
        for bad in ["", "10", "s", "1.5s", "10x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
