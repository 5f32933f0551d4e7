//! Starts two processes in one pod: a server on 127.0.0.1 and a client that reaches it over the
//! pod's loopback. Both see the pod's hostname; the host sees neither the port nor the hostname.
//!
//! ```text
//! sudo cargo run -p netns --example spawn -- NAME [--pid]
//! ```
//! The example runs itself as the two members (`serve` and `call` modes), to need no other tool.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use netns::PodNamespaces;

const PORT: u16 = 7000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(),
        Some("call") => call(),
        Some(name) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(demo(name, args.iter().any(|a| a == "--pid")))
        }
        None => anyhow::bail!("usage: spawn NAME [--pid]"),
    }
}

async fn demo(name: &str, pid: bool) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join("podkit-example").join(name);
    let mut builder = PodNamespaces::builder(name, &dir);
    if pid {
        let mut init = Command::new("sleep");
        init.arg("infinity");
        builder = builder.pid_namespace(init);
    }
    let pod = builder.create().await?;
    let result = run_members(&pod);
    for line in pod.delete()? {
        println!("  {line}");
    }
    result
}

fn run_members(pod: &PodNamespaces) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let mut server = pod.spawn(Command::new(&me).arg("serve").stdout(Stdio::piped()))?;
    // Wait for "listening" so the client does not race the server's bind.
    let mut ready = String::new();
    let stdout = server.stdout.take().context("server stdout")?;
    BufReader::new(stdout).read_line(&mut ready)?;
    print!("server: {ready}");
    let client = pod.spawn(Command::new(&me).arg("call").stdout(Stdio::piped()))?;
    let output = client.wait_with_output()?;
    print!("client: {}", String::from_utf8_lossy(&output.stdout));
    server.wait()?;
    anyhow::ensure!(output.status.success(), "client failed: {}", output.status);
    Ok(())
}

/// Member 1: answers one connection on 127.0.0.1:PORT with its hostname and pid.
fn serve() -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", PORT))?;
    println!(
        "listening on 127.0.0.1:{PORT} as pid {}",
        std::process::id()
    );
    std::io::stdout().flush()?;
    let (mut conn, _) = listener.accept()?;
    writeln!(
        conn,
        "hello from {} (pid {})",
        hostname()?,
        std::process::id()
    )?;
    Ok(())
}

/// Member 2: connects to the server over the pod's loopback and prints the reply.
fn call() -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut conn = loop {
        match TcpStream::connect(("127.0.0.1", PORT)) {
            Ok(conn) => break conn,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(err) => return Err(err).context("server unreachable over 127.0.0.1"),
        }
    };
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    print!("{} (pid {}) got: {reply}", hostname()?, std::process::id());
    Ok(())
}

fn hostname() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_owned())
}
