//! The PROXY protocol (HAProxy's, versions 1 and 2): a header written to the pod-side
//! connection before any relayed byte, carrying the real client's address and the host address
//! it connected to. Without it every client of a relayed port looks like 127.0.0.1 to the app,
//! since the relay dials from inside the pod. The app (or its proxy: nginx `proxy_protocol`,
//! HAProxy `accept-proxy`, Envoy's `proxy_protocol` listener filter) must expect the header:
//! it is opt-in, per forward.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::Error;

/// Which PROXY protocol header to send; see [`crate::Config::proxy_protocol`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    /// Version 1, text: `PROXY TCP4 203.0.113.7 192.0.2.1 51234 8080\r\n`.
    V1,
    /// Version 2, binary: the 12-byte signature, then the addresses (TCP over IPv4 or IPv6).
    V2,
}

/// The 12 bytes that start every version 2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

impl ProxyProtocol {
    /// The header for a connection from `client` to `local` (the host address it reached).
    /// IPv4-mapped IPv6 addresses are written as IPv4; families that still differ are sent as
    /// unknown (`PROXY UNKNOWN`, or the v2 `UNSPEC` family), which receivers accept.
    pub fn header(self, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
        let (client, local) = (unmapped(client), unmapped(local));
        match self {
            ProxyProtocol::V1 => match (client, local) {
                (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
                    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
                    format!(
                        "PROXY {family} {} {} {} {}\r\n",
                        client.ip(),
                        local.ip(),
                        client.port(),
                        local.port()
                    )
                    .into_bytes()
                }
                _ => b"PROXY UNKNOWN\r\n".to_vec(),
            },
            ProxyProtocol::V2 => {
                let mut header = V2_SIGNATURE.to_vec();
                // Version 2, command PROXY.
                header.push(0x21);
                let mut addresses = Vec::with_capacity(36);
                let family = match (client, local) {
                    (SocketAddr::V4(c), SocketAddr::V4(l)) => {
                        addresses.extend_from_slice(&c.ip().octets());
                        addresses.extend_from_slice(&l.ip().octets());
                        // TCP over IPv4.
                        0x11
                    }
                    (SocketAddr::V6(c), SocketAddr::V6(l)) => {
                        addresses.extend_from_slice(&c.ip().octets());
                        addresses.extend_from_slice(&l.ip().octets());
                        // TCP over IPv6.
                        0x21
                    }
                    // UNSPEC: no address block.
                    _ => 0x00,
                };
                if family != 0x00 {
                    addresses.extend_from_slice(&client.port().to_be_bytes());
                    addresses.extend_from_slice(&local.port().to_be_bytes());
                }
                header.push(family);
                // At most 36 bytes: fits.
                let len = u16::try_from(addresses.len()).unwrap_or(u16::MAX);
                header.extend_from_slice(&len.to_be_bytes());
                header.extend_from_slice(&addresses);
                header
            }
        }
    }
}

fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        })
    }
}

/// `v1` or `v2` (also `1`, `2`), as `--proxy-protocol` takes it.
impl FromStr for ProxyProtocol {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text.to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(ProxyProtocol::V1),
            "v2" | "2" => Ok(ProxyProtocol::V2),
            _ => Err(Error::InvalidProxyProtocol {
                text: text.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_is_haproxys_text_line() {
        let client: SocketAddr = "203.0.113.7:51234".parse().expect("addr");
        let local: SocketAddr = "192.0.2.1:8080".parse().expect("addr");
        assert_eq!(
            ProxyProtocol::V1.header(client, local),
            b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 8080\r\n"
        );
        let client: SocketAddr = "[2001:db8::7]:51234".parse().expect("addr");
        let local: SocketAddr = "[::1]:443".parse().expect("addr");
        assert_eq!(
            ProxyProtocol::V1.header(client, local),
            b"PROXY TCP6 2001:db8::7 ::1 51234 443\r\n"
        );
        let mapped: SocketAddr = "[::ffff:203.0.113.7]:1".parse().expect("addr");
        assert_eq!(
            ProxyProtocol::V1.header(mapped, "192.0.2.1:2".parse().expect("addr")),
            b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\n"
        );
        assert_eq!(
            ProxyProtocol::V1.header(client, "192.0.2.1:2".parse().expect("addr")),
            b"PROXY UNKNOWN\r\n"
        );
    }

    #[test]
    fn v2_is_the_binary_header() {
        let client: SocketAddr = "203.0.113.7:51234".parse().expect("addr");
        let local: SocketAddr = "192.0.2.1:8080".parse().expect("addr");
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0, 12, 203, 0, 113, 7, 192, 0, 2, 1]);
        expected.extend_from_slice(&51234u16.to_be_bytes());
        expected.extend_from_slice(&8080u16.to_be_bytes());
        assert_eq!(ProxyProtocol::V2.header(client, local), expected);
        let v6 = ProxyProtocol::V2.header(
            "[2001:db8::7]:1".parse().expect("addr"),
            "[::1]:2".parse().expect("addr"),
        );
        assert_eq!(&v6[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(v6.len(), 16 + 36);
    }

    #[test]
    fn parses_the_flag() {
        assert_eq!("v1".parse::<ProxyProtocol>().ok(), Some(ProxyProtocol::V1));
        assert_eq!("V2".parse::<ProxyProtocol>().ok(), Some(ProxyProtocol::V2));
        let err = "v3".parse::<ProxyProtocol>().expect_err("v3");
        assert!(err.to_string().contains("\"v3\""), "{err}");
    }
}
