//! What runs once per published version, in order: the `--exec` command, the `--webhook` POST
//! (retried with backoff) and the `--signal` to a pid file's process. A failed hook is logged and
//! counted; the version stays published and the hook is not run again for it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tracing::{info, warn};

use crate::puller::{Config, Metrics};

/// Attempts of one webhook call.
const WEBHOOK_ATTEMPTS: u32 = 5;

/// The configured hooks.
#[derive(Debug)]
pub struct Hooks {
    exec: Option<String>,
    webhook: Option<Uri>,
    client: Client<HttpConnector, Full<Bytes>>,
    signal: Option<(String, PathBuf)>,
    retry_initial: Duration,
    retry_max: Duration,
}

impl Hooks {
    pub fn new(config: &Config) -> Self {
        Self {
            exec: config.exec.clone(),
            webhook: config.webhook.clone(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            signal: config.signal.clone(),
            retry_initial: config.retry_initial,
            retry_max: config.retry_max,
        }
    }

    /// Runs every hook once for version `id` at `path`.
    pub async fn fire(&self, id: &str, path: &Path, metrics: &Metrics) {
        let results = [
            self.exec(id, path).await,
            self.webhook(id, path).await,
            self.signal(id).await,
        ];
        let failed = results.iter().filter(|ok| !**ok).count() as u64;
        metrics.hook_failures.fetch_add(failed, Ordering::Relaxed);
    }

    /// `--exec`: `sh -c CMD` in the version's directory.
    async fn exec(&self, id: &str, path: &Path) -> bool {
        let Some(cmd) = &self.exec else { return true };
        let status = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .env("PODKIT_VERSION", id)
            .env("PODKIT_PATH", path)
            .current_dir(path)
            .kill_on_drop(true)
            .status()
            .await;
        match status {
            Ok(status) if status.success() => {
                info!(version = %id, "exec hook succeeded");
                true
            }
            Ok(status) => {
                warn!(version = %id, %status, "exec hook failed");
                false
            }
            Err(err) => {
                warn!(version = %id, ?err, "failed to start the exec hook");
                false
            }
        }
    }

    /// `--webhook`: POST `{"version","path"}`, a 2xx answer wanted, retried with backoff.
    async fn webhook(&self, id: &str, path: &Path) -> bool {
        let Some(url) = &self.webhook else {
            return true;
        };
        let body = serde_json::json!({ "version": id, "path": path }).to_string();
        let mut wait = self.retry_initial;
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            let request = Request::post(url.clone())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.clone())));
            let outcome = match request {
                Ok(request) => match self.client.request(request).await {
                    Ok(response) if response.status().is_success() => {
                        info!(version = %id, %url, "webhook delivered");
                        return true;
                    }
                    Ok(response) => format!("answered {}", response.status()),
                    Err(err) => format!("failed: {err}"),
                },
                Err(err) => format!("could not be built: {err}"),
            };
            warn!(version = %id, %url, attempt, outcome, "webhook failed");
            if attempt < WEBHOOK_ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(self.retry_max);
            }
        }
        false
    }

    /// `--signal SIG:PIDFILE`: the shell's `kill -s SIG PID` (no unsafe code in this crate).
    async fn signal(&self, id: &str) -> bool {
        let Some((signal, pidfile)) = &self.signal else {
            return true;
        };
        let pid = match tokio::fs::read_to_string(pidfile).await {
            Ok(text) => match text.trim().parse::<u32>() {
                Ok(pid) if pid > 1 => pid,
                _ => {
                    warn!(version = %id, ?pidfile, "signal hook: the pid file holds no pid");
                    return false;
                }
            },
            Err(err) => {
                warn!(version = %id, ?pidfile, ?err, "signal hook: failed to read the pid file");
                return false;
            }
        };
        let status = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("kill -s \"$1\" \"$2\"")
            .arg("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .await;
        match status {
            Ok(status) if status.success() => {
                info!(version = %id, signal, pid, "signal sent");
                true
            }
            Ok(status) => {
                warn!(version = %id, signal, pid, %status, "failed to send the signal");
                false
            }
            Err(err) => {
                warn!(version = %id, ?err, "signal hook: failed to start sh");
                false
            }
        }
    }
}
