//! Creates a pod's namespaces, runs a command inside, and deletes them.
//!
//! ```text
//! sudo cargo run -p netns --example pod -- NAME [--pid] [--hold] [-- CMD ARGS...]
//! ```
//! Without CMD it runs `uname -n` (prints NAME: the pod's hostname). `--pid` gives the pod its own
//! PID namespace (PID 1 is `sleep infinity` here; podkit uses its pause process). `--hold` keeps
//! the pod until Ctrl-C, so `ip netns exec NAME ...` can be tried from another shell.

use std::process::Command;

use anyhow::Context;
use netns::PodNamespaces;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cmd: Vec<String> = match args.iter().position(|a| a == "--") {
        Some(i) => args.split_off(i).into_iter().skip(1).collect(),
        None => vec!["uname".into(), "-n".into()],
    };
    let flag = |f: &str| args.iter().any(|a| a == f);
    let name = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .context("usage: pod NAME [--pid] [--hold] [-- CMD ARGS...]")?
        .clone();
    let dir = std::env::temp_dir().join("podkit-example").join(&name);

    let mut builder = PodNamespaces::builder(&name, &dir);
    if flag("--pid") {
        let mut init = Command::new("sleep");
        init.arg("infinity");
        builder = builder.pid_namespace(init);
    }
    let pod = builder.create().await.context("failed to create the pod")?;
    println!(
        "created pod {name}: pins in {}, /run/netns/{name}",
        dir.display()
    );
    for link in pod.netlink().await?.links().await? {
        println!(
            "  link {} {}",
            link.name,
            if link.up { "UP" } else { "DOWN" }
        );
    }

    let status = pod
        .spawn(Command::new(&cmd[0]).args(&cmd[1..]))
        .context("failed to start the command")?
        .wait()?;
    println!("{} exited with {status}", cmd[0]);

    if flag("--hold") {
        println!("holding; try `ip netns exec {name} ip addr`; Ctrl-C deletes the pod");
        tokio::signal::ctrl_c().await?;
    }
    for line in pod.delete().context("failed to delete the pod")? {
        println!("  {line}");
    }
    Ok(())
}
