//! Gives a pod an IP address: a veth pair between the host and the pod, an address on each end,
//! a default route inside, then a TCP connection from the host to the pod's address.
//!
//! ```text
//! sudo cargo run -p netns --example veth -- NAME
//! ```
//! Equal to `ip link add pk-NAME type veth peer name eth0 netns NAME`, `ip addr add`,
//! `ip link set up`, `ip -n NAME route add default via ...`. Uses 198.18.0.0/15, the range
//! RFC 2544 sets aside for such tests, so it cannot clash with a real network.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use netns::{Netlink, PodNamespaces};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).context("usage: veth NAME")?;
    let dir = std::env::temp_dir().join("podkit-example").join(&name);
    let pod = PodNamespaces::builder(&name, &dir).create().await?;
    let result = connect_over_veth(&pod).await;
    for line in pod.delete()? {
        println!("  {line}");
    }
    result
}

async fn connect_over_veth(pod: &PodNamespaces) -> anyhow::Result<()> {
    let host_ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    let pod_ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    // Link names are at most 15 bytes.
    let host_end: String = format!("pk-{}", pod.name()).chars().take(15).collect();

    let host = Netlink::host()?;
    host.add_veth(&host_end, "eth0", pod.net()).await?;
    host.add_address(&host_end, host_ip, 30).await?;
    host.link_up(&host_end).await?;
    let inside = pod.netlink().await?;
    inside.add_address("eth0", pod_ip, 30).await?;
    inside.link_up("eth0").await?;
    inside.add_default_route(host_ip).await?;
    println!(
        "pod {} has address {pod_ip} behind host link {host_end}",
        pod.name()
    );

    let listener = pod.net().listen_tcp(SocketAddr::new(pod_ip, 8080))?;
    listener.set_nonblocking(false)?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, peer) = listener.accept()?;
        writeln!(conn, "hello {peer}, from inside the pod")
    });
    let mut reply = String::new();
    std::net::TcpStream::connect((pod_ip, 8080))?.read_to_string(&mut reply)?;
    server.join().expect("server thread")?;
    print!("host -> {pod_ip}:8080: {reply}");
    // Deleting the pod destroys eth0, and with it the host end of the pair.
    Ok(())
}
