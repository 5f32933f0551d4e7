//! `podkit pull`: an image from a registry into the store, as `podman pull` does it.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use oci::{Progress, PullOptions, Reference};

use super::images::open_store;

/// Pull an image from a registry into podkit's image store, for this host's platform.
///
/// Credentials and registries are read where podman reads them: the auth files
/// ($REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json, ~/.docker/config.json, ...;
/// `podman login` writes them), registries.conf ($CONTAINERS_REGISTRIES_CONF, or
/// /etc/containers/registries.conf: mirrors, insecure and blocked registries) and the CA
/// certificates of /etc/containers/certs.d/HOST:PORT/. Layers already in the store are not
/// downloaded again.
///
/// Progress goes to stderr (a line per layer, redrawn on a terminal), the image ID to stdout.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit pull nginx                        (docker.io/library/nginx:latest)
  podkit pull quay.io/prometheus/busybox:glibc
  podkit pull localhost:5000/app@sha256:4c1f...   (by manifest digest)
  podkit pull -q alpine:3.20               (prints only the image ID)

Exit codes: 0 when the image was pulled, 1 when it was not.")]
pub struct PullArgs {
    /// The image: NAME[:TAG] or NAME@DIGEST, completed as kubelet does (nginx is
    /// docker.io/library/nginx:latest).
    #[arg(value_name = "IMAGE")]
    image: String,

    /// Print only the image ID: no progress.
    #[arg(short, long)]
    quiet: bool,

    /// Registry credentials from a pod's imagePullSecrets on stdin, a JSON array of docker
    /// config objects (the supervisor's pulls); tried before the auth files.
    #[arg(long, hide = true)]
    pull_secrets_on_stdin: bool,
}

pub fn pull(storage: &Path, args: PullArgs) -> anyhow::Result<ExitCode> {
    // kubelet's words for an image it could not pull (its ErrImagePull event).
    let failed = || format!("Failed to pull image {:?}", args.image);
    let reference = Reference::parse(&args.image).with_context(failed)?;
    let store = open_store(storage)?;
    let mut options = PullOptions::from_env().with_context(failed)?;
    if args.pull_secrets_on_stdin {
        options.credentials = secret_credentials(&reference)?;
    }
    let display = (!args.quiet).then(|| {
        let display = Arc::new(Mutex::new(Display::new(std::io::stderr().is_terminal())));
        let callback = display.clone();
        options.progress = Some(Arc::new(move |progress: &Progress| {
            // A panic of another callback poisons the lock; the display is still usable.
            let mut display = callback.lock().unwrap_or_else(|e| e.into_inner());
            display.update(progress);
        }));
        display
    });
    if !args.quiet {
        eprintln!("Trying to pull {reference}...");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let result = runtime.block_on(oci::pull(&store, &reference, &options));
    if let Some(display) = &display {
        display.lock().unwrap_or_else(|e| e.into_inner()).finish();
    }
    let pulled = result.with_context(failed)?;
    if !args.quiet {
        eprintln!("Writing manifest to image destination");
    }
    println!("{}", pulled.image.id.hex());
    Ok(ExitCode::SUCCESS)
}

/// The first credentials for `reference` among the pull secrets on stdin (kubelet tries a pod's
/// pull secrets in order).
fn secret_credentials(reference: &Reference) -> anyhow::Result<Option<oci::Credentials>> {
    let mut json = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut json)
        .context("failed to read the pull secrets from stdin")?;
    let configs: Vec<serde_json::Value> =
        serde_json::from_slice(&json).context("the pull secrets on stdin are not a JSON array")?;
    for config in configs {
        let bytes = serde_json::to_vec(&config)?;
        if let Some(credentials) = oci::credentials_from_docker_config(&bytes, reference)
            .context("an image pull secret could not be read")?
        {
            return Ok(Some(credentials));
        }
    }
    Ok(None)
}

/// The per-layer progress lines, as podman shows them: redrawn in place on a terminal, one
/// line per finished layer otherwise.
struct Display {
    terminal: bool,
    /// One row per layer seen, in the order first seen: (layer index, short digest, state).
    rows: Vec<(usize, String, String)>,
    /// Rows drawn last time (the cursor is below them).
    drawn: usize,
    last_draw: Option<Instant>,
}

/// How often a terminal is redrawn for bytes alone (every chunk would flood it).
const REDRAW: Duration = Duration::from_millis(100);

impl Display {
    fn new(terminal: bool) -> Display {
        Display {
            terminal,
            rows: Vec::new(),
            drawn: 0,
            last_draw: None,
        }
    }

    fn update(&mut self, progress: &Progress) {
        let (index, digest, state, finished) = match progress {
            Progress::Resolved { .. } => return,
            Progress::LayerPresent { index, digest } => {
                (*index, digest, "skipped: already exists".to_owned(), true)
            }
            Progress::LayerBytes {
                index,
                digest,
                downloaded,
                size,
            } => (*index, digest, bar(*downloaded, *size), false),
            Progress::LayerUnpacking { index, digest } => {
                (*index, digest, "unpacking".to_owned(), false)
            }
            Progress::LayerDone { index, digest } => (*index, digest, "done".to_owned(), true),
        };
        let short = digest.short().to_owned();
        if !self.terminal {
            if finished {
                eprintln!("Copying blob {short} {state}");
            }
            return;
        }
        let bytes_only = matches!(progress, Progress::LayerBytes { .. });
        match self.rows.iter_mut().find(|row| row.0 == index) {
            Some(row) => row.2 = state,
            None => self.rows.push((index, short, state)),
        }
        if bytes_only && self.last_draw.is_some_and(|at| at.elapsed() < REDRAW) {
            return;
        }
        self.draw();
    }

    fn draw(&mut self) {
        let mut out = std::io::stderr().lock();
        let mut text = String::new();
        if self.drawn > 0 {
            text += &format!("\x1b[{}A", self.drawn);
        }
        for (_, short, state) in &self.rows {
            text += &format!("\r\x1b[2KCopying blob {short} {state}\n");
        }
        // A failed write to stderr leaves nothing to report it on.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        self.drawn = self.rows.len();
        self.last_draw = Some(Instant::now());
    }

    /// Draws the final state (the last bytes may not have been drawn).
    fn finish(&mut self) {
        if self.terminal && !self.rows.is_empty() {
            self.draw();
        }
    }
}

/// `[=========>----------] 1.2MiB / 3.4MiB`
fn bar(downloaded: u64, size: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (downloaded.min(size) * WIDTH)
        .checked_div(size)
        .unwrap_or(WIDTH);
    let mut bar = "=".repeat(filled as usize);
    if filled < WIDTH {
        bar.push('>');
        bar += &"-".repeat((WIDTH - filled - 1) as usize);
    }
    format!("[{bar}] {} / {}", iec(downloaded), iec(size))
}

/// Bytes in binary units with one decimal, as podman's progress bars show them.
fn iec(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bars_and_sizes() {
        assert_eq!(super::iec(512), "512B");
        assert_eq!(super::iec(1536), "1.5KiB");
        assert_eq!(super::iec(3 << 20), "3.0MiB");
        let half = super::bar(1 << 20, 2 << 20);
        assert!(
            half.starts_with("[===============>--------------]"),
            "{half}"
        );
        assert!(half.ends_with("1.0MiB / 2.0MiB"), "{half}");
        assert!(super::bar(5, 5).starts_with(&format!("[{}]", "=".repeat(30))));
        assert!(super::bar(0, 0).starts_with(&format!("[{}]", "=".repeat(30))));
    }
}
