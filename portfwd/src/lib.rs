//! Relays host ports into a pod's network namespace at loopback speed: the library behind the
//! `portfwd` binary, `podkit port-forward` and the hostPort publishing of pods.
//!
//! ```no_run
//! # async fn demo() -> portfwd::Result<()> {
//! use portfwd::{Config, Forwarder, ListenAddress, Target};
//! use tokio_util::sync::CancellationToken;
//! // Equal to `portfwd web 8080:80`: localhost:8080 on the host -> localhost:80 in pod `web`.
//! let config = Config::new(Target::pod("web"), vec!["8080:80".parse()?])
//!     .addresses(vec![ListenAddress::Localhost]);
//! let forwarder = Forwarder::bind(config).await?;
//! for listener in forwarder.listeners() {
//!     println!("{listener}"); // Forwarding from 127.0.0.1:8080 -> 80
//! }
//! let stopped = forwarder.run(CancellationToken::new()).await?;
//! # let _ = stopped; Ok(()) }
//! ```
//!
//! Each accepted TCP connection is dialed inside the target's network namespace (127.0.0.1,
//! then ::1, never a resolved `localhost`) and relayed both ways with `splice(2)` through a pipe
//! per direction, so payload bytes never enter user space; a half-close on one side is passed
//! to the other. A failed dial closes that one connection and forwarding goes on. UDP ports
//! (`8053:53/udp`) get one flow per client address, ended after an idle timeout. Forwarding
//! ends on the caller's shutdown token, or by itself when the target's network namespace is
//! deleted (its pin removed, or its process gone).
//!
//! Layout:
//! - `cli.rs`: the command line shared by `portfwd` and `podkit port-forward`;
//! - `spec.rs`: [`PortMapping`], [`Protocol`], [`ListenAddress`]: kubectl's port syntax;
//! - `target.rs`: [`Target`], which network namespace to forward into;
//! - `config.rs`: [`Config`], everything a forward needs;
//! - `forwarder.rs`: [`Forwarder`]: bind the host sockets, then run until shutdown;
//! - `tcp.rs`: the accept loop and one TCP connection;
//! - `dial.rs`: connecting inside the target, from a pool of sockets made there;
//! - `splice.rs`: the zero-copy relay of one connection;
//! - `udp.rs`: UDP flows, at most [`Config::udp_max_flows`] per mapping (the least recently
//!   used is ended for a new one);
//! - `proxy_protocol.rs`: [`ProxyProtocol`], the optional PROXY header before relayed bytes;
//! - `throttle.rs`: rate-limited warnings (per-connection errors must not flood the log);
//! - `watch.rs`: noticing that the target's network namespace is gone;
//! - `error.rs`: [`Error`];
//! - `../examples/epoll_relay.rs`, `../examples/splice_relay.rs`: the yardsticks of
//!   `bench/portfwd.sh`, the leanest relays user space allows, to measure portfwd against.

#![forbid(unsafe_code)]

pub mod cli;
mod config;
mod dial;
mod error;
mod forwarder;
mod proxy_protocol;
mod spec;
mod splice;
mod target;
mod tcp;
mod throttle;
mod udp;
mod watch;

pub use config::Config;
pub use error::{DialError, Error, Result};
pub use forwarder::{Event, Forwarder, Listening, Stats, Stopped, run};
pub use proxy_protocol::ProxyProtocol;
pub use spec::{ListenAddress, PortMapping, Protocol, parse_duration};
pub use target::Target;
