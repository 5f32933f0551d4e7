//! Opens an existing network namespace and lists its links and addresses.
//!
//! ```text
//! sudo cargo run -p netns --example open -- name NAME   # /run/netns/NAME (`ip netns add NAME`)
//! sudo cargo run -p netns --example open -- path PATH   # a pin, or /proc/PID/ns/net
//! sudo cargo run -p netns --example open -- pid PID     # the netns of process PID
//! ```
//! Equal to `ip -n NAME address show`.

use anyhow::{Context, bail};
use netns::{Namespace, NsKind};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [how, what] = args.as_slice() else {
        bail!("usage: open name NAME | path PATH | pid PID");
    };
    let ns = match how.as_str() {
        "name" => Namespace::named_netns(what)?,
        "path" => Namespace::open(NsKind::Net, what)?,
        "pid" => Namespace::from_pid(NsKind::Net, what.parse().context("PID must be a number")?)?,
        other => bail!("unknown way to open {other:?}: use name, path or pid"),
    };
    println!("{} (inode {})", ns.path().display(), ns.inode());
    let netlink = ns.netlink().await?;
    let addresses = netlink.addresses().await?;
    for link in netlink.links().await? {
        println!(
            "{}: {} {}",
            link.index,
            link.name,
            if link.up { "UP" } else { "DOWN" }
        );
        for addr in addresses.iter().filter(|a| a.link_index == link.index) {
            println!("    inet {}/{}", addr.address, addr.prefix_len);
        }
    }
    Ok(())
}
