//! Everything one forward needs, typed: the CLI, `podkit port-forward` and the pod supervisor's
//! hostPort publishing all fill in this one struct.

use std::time::Duration;

use crate::{ListenAddress, PortMapping, ProxyProtocol, Target};

/// A forward from host ports into one target's network namespace.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where to dial.
    pub target: Target,
    /// The host addresses to listen on; every mapping listens on each of them.
    pub addresses: Vec<ListenAddress>,
    /// The ports to forward.
    pub ports: Vec<PortMapping>,
    /// A UDP flow with no datagram either way for this long is ended, freeing its socket.
    pub udp_idle_timeout: Duration,
    /// The most UDP flows (one socket each) a mapping keeps on one host address; a datagram
    /// from a new client when it is full ends the least recently active flow, as conntrack
    /// drops its oldest entries, so clients cannot take every file descriptor.
    pub udp_max_flows: usize,
    /// Write this PROXY protocol header to each TCP connection into the target, before any
    /// relayed byte, so the app sees the real client address (`None`: plain relay).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// On shutdown, open connections get this long to finish before they are cut.
    pub drain_timeout: Duration,
    /// How often to check that the target's network namespace still exists.
    pub watch_interval: Duration,
    /// The size asked for each relay pipe (`F_SETPIPE_SZ`): the most a direction moves per
    /// `splice(2)`. The kernel rounds it up to a power of two pages.
    pub pipe_size: usize,
}

impl Config {
    /// A forward of `ports` into `target`, listening on `localhost`, with the defaults below.
    pub fn new(target: Target, ports: Vec<PortMapping>) -> Self {
        Config {
            target,
            addresses: vec![ListenAddress::Localhost],
            ports,
            udp_idle_timeout: Duration::from_secs(60),
            udp_max_flows: 1024,
            proxy_protocol: None,
            drain_timeout: Duration::from_secs(10),
            watch_interval: Duration::from_millis(500),
            pipe_size: 256 * 1024,
        }
    }

    /// Listens on `addresses` instead of `localhost`.
    pub fn addresses(mut self, addresses: Vec<ListenAddress>) -> Self {
        self.addresses = addresses;
        self
    }

    /// Sets [`Config::udp_idle_timeout`].
    pub fn udp_idle_timeout(mut self, timeout: Duration) -> Self {
        self.udp_idle_timeout = timeout;
        self
    }

    /// Sets [`Config::udp_max_flows`] (at least 1).
    pub fn udp_max_flows(mut self, flows: usize) -> Self {
        self.udp_max_flows = flows.max(1);
        self
    }

    /// Sets [`Config::proxy_protocol`]: each TCP connection into the target starts with a
    /// PROXY protocol header of this version, naming the client's address and the host
    /// address it connected to. Only for apps that expect it (nginx `listen ... proxy_protocol`,
    /// HAProxy `accept-proxy`).
    pub fn proxy_protocol(mut self, version: ProxyProtocol) -> Self {
        self.proxy_protocol = Some(version);
        self
    }

    /// Sets [`Config::drain_timeout`].
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets [`Config::watch_interval`].
    pub fn watch_interval(mut self, interval: Duration) -> Self {
        self.watch_interval = interval;
        self
    }

    /// Sets [`Config::pipe_size`].
    pub fn pipe_size(mut self, bytes: usize) -> Self {
        self.pipe_size = bytes;
        self
    }
}
