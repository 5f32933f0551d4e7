//! Links, addresses and routes of one network namespace, through rtnetlink: the `ip` commands a
//! pod's network needs, without running `ip`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::sys::TokioSocket;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use crate::{Error, Namespace, NsKind, Result};

/// A link (network interface), as `ip link show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    pub mtu: Option<u32>,
    /// The hardware address, empty for links without one (`lo` has all zeros).
    pub mac: Vec<u8>,
    /// The kind `ip -d link show` names after the link (`veth`, `bridge`), if it has one.
    pub kind: Option<String>,
    /// The index of the link this one is a port of (`master` in `ip link show`).
    pub controller: Option<u32>,
}

/// An address on a link, as `ip address show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub link_index: u32,
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// An rtnetlink connection bound to one network namespace (the one its socket was made in).
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
    /// Which namespace this talks to, for error messages.
    ns: PathBuf,
}

impl Namespace {
    /// An rtnetlink connection inside this network namespace. The socket is made on a
    /// dedicated thread that has entered the namespace; the connection runs on the caller's
    /// tokio runtime.
    pub async fn netlink(&self) -> Result<Netlink> {
        self.expect_kind(NsKind::Net)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let path = self.path().to_path_buf();
        let socket = self
            .run_async(move || {
                let _runtime = runtime.enter();
                <TokioSocket as rtnetlink::sys::AsyncSocket>::new(
                    rtnetlink::sys::protocols::NETLINK_ROUTE,
                )
            })
            .await?
            .map_err(|source| Error::NetlinkSocket {
                path: path.clone(),
                source,
            })?;
        Ok(Netlink::from_socket(socket, path))
    }
}

impl Netlink {
    /// A connection to the network namespace of the calling thread: the host's, on a tokio
    /// worker (podkit never moves those). Needs a tokio runtime.
    pub fn host() -> Result<Self> {
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let ns = PathBuf::from("/proc/self/ns/net");
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| Error::NetlinkSocket {
                path: ns.clone(),
                source,
            })?;
        tokio::spawn(connection);
        Ok(Netlink { handle, ns })
    }

    /// Wraps a socket made inside the namespace `ns`. Needs a tokio runtime.
    pub(crate) fn from_socket(socket: TokioSocket, ns: PathBuf) -> Self {
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        // Ends by itself once every handle is dropped.
        tokio::spawn(connection);
        Netlink { handle, ns }
    }

    /// Equal to `ip link set NAME up`.
    pub async fn link_up(&self, name: &str) -> Result<()> {
        let message = LinkUnspec::new_with_name(name).up().build();
        let request = self.handle.link().set(message).execute();
        request
            .await
            .map_err(|err| self.error(format!("ip link set {name} up"), name, err))
    }

    /// Equal to `ip link show`.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let stream = self.handle.link().get().execute();
        let messages: Vec<_> = stream
            .try_collect()
            .await
            .map_err(|err| self.error("ip link show".into(), "", err))?;
        Ok(messages.into_iter().map(parse_link).collect())
    }

    /// Equal to `ip -d link show NAME`; [`Error::LinkNotFound`] when there is none.
    pub async fn link(&self, name: &str) -> Result<Link> {
        let stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let messages: Vec<_> = stream
            .try_collect()
            .await
            .map_err(|err| self.error(format!("ip link show {name}"), name, err))?;
        messages
            .into_iter()
            .next()
            .map(parse_link)
            .ok_or_else(|| self.not_found(name))
    }

    /// The index of link `name`; [`Error::LinkNotFound`] when there is none.
    pub async fn link_index(&self, name: &str) -> Result<u32> {
        let stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let messages: Vec<_> = stream
            .try_collect()
            .await
            .map_err(|err| self.error(format!("ip link show {name}"), name, err))?;
        messages
            .first()
            .map(|message| message.header.index)
            .ok_or_else(|| self.not_found(name))
    }

    /// Equal to `ip address show`.
    pub async fn addresses(&self) -> Result<Vec<Address>> {
        let stream = self.handle.address().get().execute();
        let messages: Vec<_> = stream
            .try_collect()
            .await
            .map_err(|err| self.error("ip address show".into(), "", err))?;
        Ok(messages
            .into_iter()
            .filter_map(|message| {
                // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS
                // elsewhere. Prefer the former, as iproute2 does.
                let mut address = None;
                for attribute in &message.attributes {
                    match attribute {
                        AddressAttribute::Local(ip) => address = Some(*ip),
                        AddressAttribute::Address(ip) if address.is_none() => address = Some(*ip),
                        _ => {}
                    }
                }
                Some(Address {
                    link_index: message.header.index,
                    address: address?,
                    prefix_len: message.header.prefix_len,
                })
            })
            .collect())
    }

    /// Equal to `ip address add ADDRESS/PREFIX dev LINK` (with `nodad` for an IPv6 address).
    pub async fn add_address(&self, link: &str, address: IpAddr, prefix_len: u8) -> Result<()> {
        let index = self.link_index(link).await?;
        let mut request = self.handle.address().add(index, address, prefix_len);
        if address.is_ipv6() {
            // An IPv6 address is tentative until duplicate address detection is over (a
            // second or more), and unusable meanwhile: podkit's addresses are handed out once
            // by its IPAM, on links of its own, so it skips DAD, as `ip address add ...
            // nodad` and netavark do.
            use rtnetlink::packet_route::address::{
                AddressAttribute, AddressFlags, AddressHeaderFlags,
            };
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request.execute().await.map_err(|err| {
            self.error(
                format!("ip address add {address}/{prefix_len} dev {link}"),
                link,
                err,
            )
        })
    }

    /// Equal to `ip link add NAME type veth peer name PEER netns NS`: a veth pair with `name`
    /// here and `peer` created directly inside `peer_ns` (so `peer` may be a name the host
    /// uses too, such as `eth0`).
    pub async fn add_veth(&self, name: &str, peer: &str, peer_ns: &Namespace) -> Result<()> {
        let fd = peer_ns.as_fd();
        let peer_message = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_owned())
            .setns_by_fd(fd.as_raw_fd())
            .build();
        let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_owned())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
            .build();
        // `fd` borrows `peer_ns`, so the namespace stays open until the kernel has answered.
        let request = self.handle.link().add(message).execute();
        request.await.map_err(|err| {
            let op = format!(
                "ip link add {name} type veth peer name {peer} netns {}",
                peer_ns.path().display()
            );
            self.error(op, name, err)
        })
    }

    /// Equal to `ip link add NAME mtu MTU up type bridge`.
    pub async fn add_bridge(&self, name: &str, mtu: u32) -> Result<()> {
        let message = LinkBridge::new(name).mtu(mtu).build();
        let request = self.handle.link().add(message).execute();
        request.await.map_err(|err| {
            let op = format!("ip link add {name} mtu {mtu} up type bridge");
            self.error(op, "", err)
        })
    }

    /// Equal to `ip link set NAME mtu MTU`.
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        let message = LinkUnspec::new_with_name(name).mtu(mtu).build();
        let request = self.handle.link().set(message).execute();
        request
            .await
            .map_err(|err| self.error(format!("ip link set {name} mtu {mtu}"), name, err))
    }

    /// Equal to `ip link set NAME address MAC`. Setting a bridge's own address again pins it:
    /// the kernel otherwise gives a bridge the lowest address of its ports, which changes as
    /// ports come and go.
    pub async fn set_mac(&self, name: &str, mac: &[u8]) -> Result<()> {
        let message = LinkUnspec::new_with_name(name)
            .address(mac.to_vec())
            .build();
        let request = self.handle.link().set(message).execute();
        request.await.map_err(|err| {
            let mac = mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            self.error(format!("ip link set {name} address {mac}"), name, err)
        })
    }

    /// Equal to `ip link add NAME mtu MTU master BRIDGE up type veth peer name PEER mtu MTU
    /// netns NS`, with `BRIDGE` given by index: a bridge port here, up, and its peer inside
    /// `peer_ns`, in one request. The peer stays down: Linux 6.18 answers ENOTCONN to a peer
    /// asked up in another namespace, so the caller brings it up there.
    pub async fn add_veth_port(
        &self,
        name: &str,
        bridge: u32,
        mtu: u32,
        peer: &str,
        peer_ns: &Namespace,
    ) -> Result<()> {
        let fd = peer_ns.as_fd();
        let peer_message = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_owned())
            .mtu(mtu)
            .setns_by_fd(fd.as_raw_fd())
            .build();
        let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_owned())
            .mtu(mtu)
            .controller(bridge)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
            .build();
        // `fd` borrows `peer_ns`, so the namespace stays open until the kernel has answered.
        let request = self.handle.link().add(message).execute();
        request.await.map_err(|err| {
            let op = format!(
                "ip link add {name} mtu {mtu} master (index {bridge}) up type veth \
                 peer name {peer} mtu {mtu} netns {}",
                peer_ns.path().display()
            );
            self.error(op, "", err)
        })
    }

    /// Equal to `ip link set NAME type bridge_slave hairpin on` (or `off`): whether the
    /// bridge may send a frame back out of the port it came in by.
    pub async fn set_hairpin(&self, name: &str, on: bool) -> Result<()> {
        let index = self.link_index(name).await?;
        let message = LinkBridgePort::new(index).hairpin(on).build();
        let request = self.handle.link().set_port(message).execute();
        request.await.map_err(|err| {
            let state = if on { "on" } else { "off" };
            self.error(
                format!("ip link set {name} type bridge_slave hairpin {state}"),
                name,
                err,
            )
        })
    }

    /// Equal to `ip route add default via GATEWAY`.
    pub async fn add_default_route(&self, gateway: IpAddr) -> Result<()> {
        let message = match gateway {
            IpAddr::V4(gateway) => RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .build(),
            IpAddr::V6(gateway) => RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(gateway)
                .build(),
        };
        let request = self.handle.route().add(message).execute();
        request
            .await
            .map_err(|err| self.error(format!("ip route add default via {gateway}"), "", err))
    }

    /// Equal to `ip route replace SUBNET dev LINK` (scope link): traffic to `subnet` leaves by
    /// `link` instead of the default route. Replaces a route to the same subnet.
    pub async fn replace_link_route(&self, subnet: crate::Subnet, link: &str) -> Result<()> {
        let index = self.link_index(link).await?;
        let message = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(subnet.network(), subnet.prefix_len())
            .output_interface(index)
            .scope(rtnetlink::packet_route::route::RouteScope::Link)
            .build();
        let request = self.handle.route().add(message).replace().execute();
        request
            .await
            .map_err(|err| self.error(format!("ip route replace {subnet} dev {link}"), link, err))
    }

    /// Equal to `ip link del NAME`.
    pub async fn del_link(&self, name: &str) -> Result<()> {
        let index = self.link_index(name).await?;
        let request = self.handle.link().del(index).execute();
        request
            .await
            .map_err(|err| self.error(format!("ip link del {name}"), name, err))
    }

    /// The namespace this connection talks to, as given when it was made.
    pub fn namespace_path(&self) -> &std::path::Path {
        &self.ns
    }

    /// The underlying rtnetlink handle, for requests this type does not wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    fn not_found(&self, name: &str) -> Error {
        Error::LinkNotFound {
            name: name.to_owned(),
            ns: self.ns.clone(),
        }
    }

    /// Maps a kernel "no such device" on `link` to [`Error::LinkNotFound`], the rest to
    /// [`Error::Netlink`] naming the command.
    fn error(&self, op: String, link: &str, source: rtnetlink::Error) -> Error {
        match &source {
            rtnetlink::Error::NetlinkError(message)
                if !link.is_empty() && message.raw_code() == -libc::ENODEV =>
            {
                self.not_found(link)
            }
            _ => Error::Netlink {
                op,
                ns: self.ns.clone(),
                source,
            },
        }
    }
}

/// A link as `ip -d link show` describes it.
fn parse_link(message: LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        up: message.header.flags.contains(LinkFlags::Up),
        mtu: None,
        mac: Vec::new(),
        kind: None,
        controller: None,
    };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
            LinkAttribute::Address(mac) => link.mac = mac,
            LinkAttribute::Controller(index) => link.controller = Some(index),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}
