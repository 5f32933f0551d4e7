//! A bridge's pod subnets: [`Subnet`], IPv4 (`10.90.0.0/16`), the range its pods lease their
//! addresses from, and [`Subnet6`], IPv6 (`fd90:706f:646b::/64`), where each pod's IPv6 address
//! follows from its IPv4 one.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::{Error, Result};

/// An IPv4 network: its address (host bits zero) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Subnet {
    /// The subnet `network/prefix_len`. `network` must have its host bits zero (`10.90.0.0/16`,
    /// not `10.90.1.0/16`): a typo there would otherwise silently pick another range.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self> {
        check_network(network, prefix_len, 32, || {
            Ipv4Addr::from(u32::from(network) & mask(prefix_len))
        })?;
        Ok(Subnet {
            network,
            prefix_len,
        })
    }

    /// For constants known to be valid.
    pub(crate) const fn new_unchecked(network: Ipv4Addr, prefix_len: u8) -> Self {
        Subnet {
            network,
            prefix_len,
        }
    }

    /// The network address (`10.90.0.0`).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length (`16`).
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The broadcast address, the last of the range (`10.90.255.255`).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix_len))
    }

    /// The gateway: the first address after the network's, as CNI's bridge plugin chooses it
    /// (`10.90.0.1`). It goes on the bridge; pods route through it.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).wrapping_add(1))
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.network)
    }

    /// The addresses a pod may have: all but the network, the gateway and the broadcast
    /// address, as a `u32` range.
    pub(crate) fn pod_range(&self) -> RangeInclusive<u32> {
        u32::from(self.network).saturating_add(2)..=u32::from(self.broadcast()).saturating_sub(1)
    }

    /// Whether `ip` may be a pod's address; the reason when not.
    pub(crate) fn check_pod_ip(&self, ip: Ipv4Addr) -> Result<()> {
        let reason = if !self.contains(ip) {
            Some("it is outside the subnet")
        } else if ip == self.network {
            Some("it is the network address")
        } else if ip == self.gateway() {
            Some("it is the gateway (the bridge's own address)")
        } else if ip == self.broadcast() {
            Some("it is the broadcast address")
        } else {
            None
        };
        pod_ip_checked(ip.into(), self, reason)
    }

    /// [`Error::InvalidSubnet`] unless the subnet holds a network, a gateway, a broadcast
    /// address and at least one pod: /30 or larger.
    pub(crate) fn check_pod_network(&self) -> Result<()> {
        if self.prefix_len > 30 {
            return Err(Error::InvalidSubnet {
                subnet: self.to_string(),
                reason: "too small for a gateway and a pod: use a /30 or larger".into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Subnet {
    type Err = Error;

    /// Parses `A.B.C.D/N`.
    fn from_str(text: &str) -> Result<Self> {
        let (network, prefix_len) = parse_cidr(text, "an IPv4 network", "10.90.0.0/16")?;
        Subnet::new(network, prefix_len)
    }
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

/// An IPv6 network: its address (host bits zero) and prefix length. A bridge's second subnet,
/// beside its IPv4 one, where the host has IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet6 {
    network: Ipv6Addr,
    prefix_len: u8,
}

impl Subnet6 {
    /// The subnet `network/prefix_len`; `network` must have its host bits zero, as for
    /// [`Subnet::new`].
    pub fn new(network: Ipv6Addr, prefix_len: u8) -> Result<Self> {
        check_network(network, prefix_len, 128, || {
            Ipv6Addr::from(u128::from(network) & mask6(prefix_len))
        })?;
        Ok(Subnet6 {
            network,
            prefix_len,
        })
    }

    /// For constants known to be valid.
    pub(crate) const fn new_unchecked(network: Ipv6Addr, prefix_len: u8) -> Self {
        Subnet6 {
            network,
            prefix_len,
        }
    }

    /// The network address (`fd90:706f:646b::`).
    pub fn network(&self) -> Ipv6Addr {
        self.network
    }

    /// The prefix length (`64`).
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The gateway: the first address after the network's (the subnet-router anycast
    /// address), as CNI's bridge plugin chooses it (`fd90:706f:646b::1`).
    pub fn gateway(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network).wrapping_add(1))
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & mask6(self.prefix_len) == u128::from(self.network)
    }

    /// The IPv6 address of the pod whose IPv4 address is `ip` on `subnet`: this subnet's
    /// network plus the IPv4 address's offset in its own (`10.90.2.114` on 10.90.0.0/16 is
    /// `fd90:706f:646b::272` on fd90:706f:646b::/64), as IPv4-embedded schemes map them. One
    /// lease (the IPv4 one) so gives a pod both addresses: no second lock, file or sweep,
    /// and the gateways match (`.1` and `::1`). [`Error::InvalidSubnet`] when this subnet
    /// has fewer host bits than `subnet` ([`Subnet6::check_room_for`]), or `ip` is not on it.
    pub fn pod_address(&self, subnet: Subnet, ip: Ipv4Addr) -> Result<Ipv6Addr> {
        self.check_room_for(subnet)?;
        if !subnet.contains(ip) {
            return Err(Error::InvalidPodAddress {
                ip: ip.into(),
                subnet: subnet.to_string(),
                reason: "it is outside the subnet",
            });
        }
        let offset = u32::from(ip) - u32::from(subnet.network());
        Ok(Ipv6Addr::from(
            u128::from(self.network) | u128::from(offset),
        ))
    }

    /// [`Error::InvalidSubnet`] unless every address of `subnet` has its own in this one
    /// ([`Subnet6::pod_address`]): at least as many host bits.
    pub fn check_room_for(&self, subnet: Subnet) -> Result<()> {
        let (bits6, bits4) = (128 - self.prefix_len, 32 - subnet.prefix_len());
        if bits6 < bits4 {
            return Err(Error::InvalidSubnet {
                subnet: self.to_string(),
                reason: format!(
                    "too small for the pods of {subnet}: a pod's IPv6 address follows from its \
                     IPv4 one, so it needs a /{} or larger",
                    128 - bits4
                ),
            });
        }
        Ok(())
    }

    /// Whether `ip` may be a pod's address; the reason when not.
    pub(crate) fn check_pod_ip(&self, ip: Ipv6Addr) -> Result<()> {
        let reason = if !self.contains(ip) {
            Some("it is outside the subnet")
        } else if ip == self.network {
            Some("it is the network address (the subnet-router anycast address)")
        } else if ip == self.gateway() {
            Some("it is the gateway (the bridge's own address)")
        } else {
            None
        };
        pod_ip_checked(ip.into(), self, reason)
    }

    /// [`Error::InvalidSubnet`] unless the subnet holds a network, a gateway and at least one
    /// pod: /126 or larger.
    pub(crate) fn check_pod_network(&self) -> Result<()> {
        if self.prefix_len > 126 {
            return Err(Error::InvalidSubnet {
                subnet: self.to_string(),
                reason: "too small for a gateway and a pod: use a /126 or larger".into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Subnet6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Subnet6 {
    type Err = Error;

    /// Parses `X:X::/N`.
    fn from_str(text: &str) -> Result<Self> {
        let (network, prefix_len) = parse_cidr(text, "an IPv6 network", "fd90:706f:646b::/64")?;
        Subnet6::new(network, prefix_len)
    }
}

/// [`Error::InvalidSubnet`] unless `prefix_len` fits an address of `bits` and `network` has
/// its host bits zero (`masked` is the network with them cleared: what the user meant).
fn check_network<A: fmt::Display + PartialEq>(
    network: A,
    prefix_len: u8,
    bits: u8,
    masked: impl FnOnce() -> A,
) -> Result<()> {
    let invalid = |reason: String| Error::InvalidSubnet {
        subnet: format!("{network}/{prefix_len}"),
        reason,
    };
    if prefix_len > bits {
        return Err(invalid(format!("the prefix length must be 0 to {bits}")));
    }
    let masked = masked();
    if masked != network {
        return Err(invalid(format!(
            "host bits are set: did you mean {masked}/{prefix_len}?"
        )));
    }
    Ok(())
}

/// [`Error::InvalidPodAddress`] for `ip` on `subnet` when there is a `reason` it cannot be a
/// pod's.
fn pod_ip_checked(
    ip: std::net::IpAddr,
    subnet: &impl fmt::Display,
    reason: Option<&'static str>,
) -> Result<()> {
    match reason {
        Some(reason) => Err(Error::InvalidPodAddress {
            ip,
            subnet: subnet.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// `NETWORK/N` split and parsed; what `kind` and `example` say when it is not.
fn parse_cidr<A: FromStr>(text: &str, kind: &str, example: &str) -> Result<(A, u8)> {
    let invalid = || Error::InvalidSubnet {
        subnet: text.to_owned(),
        reason: format!("expected {kind} and a prefix length, as {example}"),
    };
    let (network, prefix_len) = text.split_once('/').ok_or_else(invalid)?;
    let network = network.parse().map_err(|_| invalid())?;
    let prefix_len = prefix_len.parse().map_err(|_| invalid())?;
    Ok((network, prefix_len))
}

fn mask6(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0)
}
