//! Sockets made inside a pod's network namespace, used from tokio tasks on the host: a listener
//! inside the pod served by a host task, and a `Dialer` connecting to it from the host.
//!
//! ```text
//! sudo cargo run -p netns --example sockets -- NAME
//! ```

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use netns::PodNamespaces;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).context("usage: sockets NAME")?;
    let dir = std::env::temp_dir().join("podkit-example").join(&name);
    let pod = PodNamespaces::builder(&name, &dir).create().await?;
    let result = talk(&pod).await;
    pod.delete()?;
    result
}

async fn talk(pod: &PodNamespaces) -> anyhow::Result<()> {
    // Port 0: the kernel picks one in the pod's own port space.
    let std_listener = pod
        .net()
        .listen_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let port = std_listener.local_addr()?.port();
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await?;
        let mut request = String::new();
        conn.read_to_string(&mut request).await?;
        conn.write_all(format!("echo: {request}").as_bytes())
            .await?;
        anyhow::Ok(())
    });

    let dialer = pod.net().dialer()?;
    let mut conn = dialer.connect_localhost(port).await?;
    conn.write_all(b"ping").await?;
    conn.shutdown().await?; // half-close: the server sees EOF and still answers
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await?;
    server.await??;
    println!("pod {} localhost:{port} answered {reply:?}", pod.name());

    let from_host = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await;
    println!(
        "the host's own 127.0.0.1:{port}: {}",
        match from_host {
            Ok(_) =>
                "reached a host listener (a different one: the pod's is invisible here)".into(),
            Err(err) => err.to_string(),
        }
    );
    Ok(())
}
