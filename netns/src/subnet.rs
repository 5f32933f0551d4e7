//! An IPv4 subnet (`10.90.0.0/16`): the range a bridge's pods take their addresses from.

use std::fmt;
use std::net::Ipv4Addr;
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
        if prefix_len > 32 {
            return Err(Error::InvalidSubnet {
                subnet: format!("{network}/{prefix_len}"),
                reason: "the prefix length must be 0 to 32".into(),
            });
        }
        let subnet = Subnet {
            network: Ipv4Addr::from(u32::from(network) & mask(prefix_len)),
            prefix_len,
        };
        if subnet.network != network {
            return Err(Error::InvalidSubnet {
                subnet: format!("{network}/{prefix_len}"),
                reason: format!("host bits are set: did you mean {subnet}?"),
            });
        }
        Ok(subnet)
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
    pub(crate) fn pod_range(&self) -> std::ops::RangeInclusive<u32> {
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
        match reason {
            Some(reason) => Err(Error::InvalidPodAddress {
                ip,
                subnet: self.to_string(),
                reason,
            }),
            None => Ok(()),
        }
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
        let invalid = || Error::InvalidSubnet {
            subnet: text.to_owned(),
            reason: "expected an IPv4 network and a prefix length, as 10.90.0.0/16".into(),
        };
        let (network, prefix_len) = text.split_once('/').ok_or_else(invalid)?;
        let network = network.parse().map_err(|_| invalid())?;
        let prefix_len = prefix_len.parse().map_err(|_| invalid())?;
        Subnet::new(network, prefix_len)
    }
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}
