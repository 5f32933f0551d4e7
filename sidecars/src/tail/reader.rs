//! The reader thread: finds the files, follows them through rotation and turns their bytes into
//! records for the sink.
//!
//! File IO is blocking and runs on this one OS thread, never on a tokio worker. It wakes on
//! inotify events (through `notify`) and at every `poll_interval` (the fallback when inotify is
//! unavailable, its queue overflowed, or the file system does not report changes).
//!
//! Identity: an open file is known by its device and inode (it cannot be reused while we hold it
//! open); a file found on disk is matched to a checkpoint by device, inode *and* the fingerprint
//! of its first bytes, because inodes are reused after deletion.
//!
//! Rotation:
//! - rename + create: the renamed file keeps its inode; it is read to its end and closed once it
//!   has been quiet for `rotate_wait`; the new file is read from its first byte.
//! - copytruncate: the size drops below our offset (or the first bytes change): the file is read
//!   again from byte 0 as a new stream. If the globs also match the copy, it is recognised by its
//!   first bytes (held back while it is being written) and read from the offset we had reached
//!   in the original, so lines between our last read and the truncation are not lost, and
//!   nothing is read twice.
//! - deletion: the open file is read to its end like a renamed one.
//!
//! Backpressure: records go to the sink through a bounded channel; when it is full this thread
//! blocks, so reading pauses while the sink is down instead of buffering without limit.
//!
//! Safety: every path is opened through `open.rs` (regular files below a base directory, no
//! links unless `--follow-symlinks`, never a FIFO or a device); anything else that matches is
//! skipped with one warning per path.
//!
//! Descriptors: a followed file at its end that has not grown for `--close-inactive` is closed
//! and stays tracked without a descriptor (dormant); the scan reopens it once its size, mtime or
//! ctime changes. At the open-file limit the longest-idle file is made dormant to make room, so
//! a new file (the next `app.log`) is always picked up.
//!
//! Progress: the thread marks each step of work on the file system in `Metrics::progress`;
//! `/healthz` fails when one has not ended for `--stall-timeout` (a read that does not return).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::Watcher;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::tail::checkpoint::{Entry, FINGERPRINT_MAX, Fingerprint, State};
use crate::tail::discover::Matcher;
use crate::tail::lines::{LineReader, Lines, Record};
use crate::tail::open::{OpenError, Opener};
use crate::tail::throttle::Throttle;
use crate::tail::{Config, Metrics, ReadFrom};

/// What the reader tells the sink, in file order.
#[derive(Debug)]
pub(crate) enum Event {
    /// A stream starts, or its path or fingerprint changed.
    Open { id: u64, entry: Entry },
    /// A record.
    Record(Record),
    /// Complete lines as they are in the file (raw input to the raw stdout sink).
    Lines(Lines),
    /// A stream was read to its end and closed: drop its checkpoint once the records before
    /// are accepted.
    Close { id: u64 },
}

/// A batch of events sent at once.
pub(crate) type Chunk = Vec<Event>;

/// Most records in one chunk.
const CHUNK_RECORDS: usize = 1024;
/// Most bytes read into one chunk.
const CHUNK_BYTES: usize = 256 * 1024;
/// Bytes asked for by one read(2): a chunk's worth, so a file growing fast costs a few
/// syscalls per MiB.
const READ_BYTES: usize = CHUNK_BYTES;
/// Most bytes read from one file in a pass, so a busy file does not starve the others.
const PASS_BYTES: u64 = 4 * 1024 * 1024;
/// How long an offset reached in a truncated file is remembered, waiting for its copy.
const TRUNCATED_MEMORY: Duration = Duration::from_secs(60);
/// Repeated warnings (open or read failures, refused paths): this many lines per window...
const WARN_BURST: u32 = 5;
/// ...of this length; the rest are counted and the count logged.
const WARN_WINDOW: Duration = Duration::from_secs(10);

/// What changes when a file's content does: size, and mtime and ctime to the nanosecond (a
/// file truncated and rewritten to the same size within a second keeps its size, not its
/// ctime, which no one can set back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A file being followed.
#[derive(Debug)]
struct Tracked {
    id: u64,
    path: PathBuf,
    /// `None`: dormant (closed while inactive, see the module doc).
    file: Option<File>,
    /// The file's [`Stamp`] at the last read pass (or when it went dormant).
    stamp: Stamp,
    dev: u64,
    ino: u64,
    fp: Fingerprint,
    /// The first `fp.len` bytes: a copy of this file is recognised by them.
    head: Vec<u8>,
    /// Next byte to read.
    offset: u64,
    /// Size at the last read pass (or when it was opened): `size <= offset` is "at its end".
    size: u64,
    lines: LineReader,
    /// When the globs stopped matching it (renamed away or deleted).
    gone_since: Option<Instant>,
    /// The last complete scan did not list it. A directory listing that races a rename may
    /// miss the renamed entry (readdir(3): a file renamed during the listing may or may not be
    /// returned; seen on ext4 with a rotation in a 300-file directory), so a file is taken for
    /// gone only when two scans in a row miss it.
    missed: bool,
    last_growth: Instant,
}

impl Tracked {
    fn entry(&self) -> Entry {
        Entry {
            path: self.path.clone(),
            dev: self.dev,
            ino: self.ino,
            fingerprint: self.fp,
            // Not `self.offset`: data still pending in the line reader is not shipped yet.
            offset: self.lines.committed(),
            closed_at_ms: None,
        }
    }
}

/// A file opened but not read yet (see `Reader::held`).
#[derive(Debug)]
struct Held {
    path: PathBuf,
    file: File,
    since: Instant,
}

struct Reader {
    config: Arc<Config>,
    matcher: Matcher,
    opener: Opener,
    /// Matched paths refused (links, FIFOs, devices, ...) with the device and inode they had:
    /// warned about once, and again only if they change. Pruned to what the last scan saw.
    refused: HashMap<PathBuf, (u64, u64)>,
    /// Budgets of repeated warnings.
    warn_open: Throttle,
    warn_refused: Throttle,
    warn_read: Throttle,
    /// Checkpoints from the state file not matched to a file yet.
    checkpoints: Vec<Entry>,
    files: HashMap<(u64, u64), Tracked>,
    /// New files whose first bytes are those of a followed or truncated file: copies
    /// (copytruncate) held back until they are complete and the original's truncation tells
    /// where to start in them. Kept open, so a rename cannot make us lose them.
    held: HashMap<(u64, u64), Held>,
    /// Files read to their end and closed, with their fingerprint: a rotation sibling that is
    /// one of them is not read again (inodes are reused, hence the fingerprint).
    done: HashMap<(u64, u64), (Fingerprint, Instant)>,
    /// Rotation siblings modified before this are not ours to read: this run's start, or, after
    /// a restart, the last checkpoint save (a file created after it and rotated while we were
    /// down has lines that were never checkpointed).
    started: std::time::SystemTime,
    /// Whether `started` comes from a state file (siblings are then looked for at startup too).
    resumed: bool,
    /// Truncated files: their first bytes and the offset we had reached.
    truncated: Vec<(Vec<u8>, u64, Instant)>,
    next_id: u64,
    out: Chunk,
    /// The read buffer, reused; zeroed only when it grows.
    buf: Vec<u8>,
    out_records: usize,
    out_bytes: usize,
    tx: Sender<Chunk>,
    runtime: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

/// Starts the reader thread.
pub(crate) fn spawn(
    config: Arc<Config>,
    matcher: Matcher,
    state: State,
    tx: Sender<Chunk>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    // mtimes are coarse (a clock tick behind): keep a margin.
    let resumed = state.saved_at.is_some();
    let started = state
        .saved_at
        .map(|t| t - Duration::from_millis(100))
        .unwrap_or_else(std::time::SystemTime::now);
    let checkpoints = state.entries;
    let runtime = tokio::runtime::Handle::current();
    let opener = Opener::new(
        matcher.bases().iter().map(|b| b.dir.as_path()),
        config.follow_symlinks,
    );
    for (given, real) in opener.resolved() {
        if given != real {
            info!(base = ?given, resolved = ?real, "base directory resolved through symbolic links; links placed later are refused");
        }
    }
    let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel::<()>(1);
    {
        let (wake_tx, shutdown) = (wake_tx.clone(), shutdown.clone());
        runtime.spawn(async move {
            shutdown.cancelled().await;
            let _ = wake_tx.try_send(());
        });
    }
    let reader = Reader {
        config,
        matcher,
        opener,
        refused: HashMap::new(),
        warn_open: Throttle::new(WARN_WINDOW, WARN_BURST),
        warn_refused: Throttle::new(WARN_WINDOW, WARN_BURST),
        warn_read: Throttle::new(WARN_WINDOW, WARN_BURST),
        checkpoints,
        files: HashMap::new(),
        held: HashMap::new(),
        done: HashMap::new(),
        started,
        resumed,
        truncated: Vec::new(),
        next_id: 1,
        out: Vec::new(),
        buf: Vec::new(),
        out_records: 0,
        out_bytes: 0,
        tx,
        runtime,
        metrics,
        shutdown,
    };
    std::thread::Builder::new()
        .name("podkit-tail-reader".into())
        .spawn(move || reader.run(wake_tx, wake_rx))
}

/// Wakes the reader on file system events; marks a rescan for anything but a data change.
///
/// `notify` also watches opens (`IN_OPEN`), and the reader's own scans open the watched
/// directories: waking on those would rescan forever, idle or not. Opens and closes carry no
/// news (a write is also a `Modify`), so `Access` events are ignored.
fn watcher(
    wake: SyncSender<()>,
    rescan: Arc<AtomicBool>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::EventKind;
    use notify::event::ModifyKind;
    notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(ev) = &event
            && matches!(ev.kind, EventKind::Access(_))
            && !ev.need_rescan()
        {
            return;
        }
        let data_only = match &event {
            Ok(ev) => {
                matches!(ev.kind, EventKind::Modify(ModifyKind::Data(_))) && !ev.need_rescan()
            }
            // Errors include a queue overflow: rescan everything.
            Err(_) => false,
        };
        if !data_only {
            rescan.store(true, Ordering::Release);
        }
        let _ = wake.try_send(());
    })
}

impl Reader {
    fn run(mut self, wake_tx: SyncSender<()>, wake_rx: std::sync::mpsc::Receiver<()>) {
        let rescan = Arc::new(AtomicBool::new(true));
        let mut watcher = match watcher(wake_tx, rescan.clone()) {
            Ok(w) => Some(w),
            Err(err) => {
                warn!(?err, "inotify unavailable, polling only");
                None
            }
        };
        let bases = self.matcher.bases().to_vec();
        let mut unwatched: Vec<_> = bases.clone();
        let mut first = true;
        let mut next_poll = Instant::now();
        while !self.shutdown.is_cancelled() {
            let now = Instant::now();
            self.metrics.progress.step();
            let poll = now >= next_poll;
            if poll && let Some(w) = watcher.as_mut() {
                unwatched.retain(|base| {
                    let mode = if base.depth == Some(0) {
                        notify::RecursiveMode::NonRecursive
                    } else {
                        notify::RecursiveMode::Recursive
                    };
                    match w.watch(&base.dir, mode) {
                        Ok(()) => {
                            debug!(dir = ?base.dir, "watching");
                            false
                        }
                        Err(_) => true,
                    }
                });
            }
            if rescan.swap(false, Ordering::AcqRel) || poll {
                self.scan(first, now);
                if first {
                    self.resume_renamed(now);
                    first = false;
                }
            }
            if poll {
                next_poll = now + self.config.poll_interval;
            }
            self.decide_held(now);
            let backlog = self.read_all(now);
            self.close_gone(now);
            self.close_inactive(now);
            self.report_suppressed(now);
            if !self.send() {
                break;
            }
            let deadline = self.deadline().map_or(next_poll, |d| d.min(next_poll));
            // A file left unread after its share of the pass (`PASS_BYTES`) is read again at
            // once: its growth may have been announced already, and no event is coming.
            let wait = if backlog {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            self.metrics.progress.idle();
            match wake_rx.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Shutdown: hand over what is read if there is room; the rest stays un-checkpointed
        // and is read again after the restart.
        if !self.out.is_empty() {
            let _ = self.tx.try_send(std::mem::take(&mut self.out));
        }
        self.metrics.files_open.store(0, Ordering::Relaxed);
        self.metrics.progress.idle();
        debug!("reader stopped");
    }

    fn deadline(&self) -> Option<Instant> {
        let held = self
            .held
            .values()
            .map(|h| h.since + self.config.rotate_wait)
            .min();
        self.files
            .values()
            .flat_map(|t| {
                let gone = t
                    .gone_since
                    .map(|g| g.max(t.last_growth) + self.config.rotate_wait);
                [t.lines.deadline(), gone]
            })
            .flatten()
            .chain(held)
            .min()
    }

    fn emit(&mut self, event: Event) {
        match &event {
            Event::Record(rec) => {
                self.out_records += 1;
                self.out_bytes += rec.message.len();
            }
            Event::Lines(lines) => {
                self.out_records += lines.count as usize;
                self.out_bytes += lines.bytes.len();
            }
            Event::Open { .. } | Event::Close { .. } => {}
        }
        self.out.push(event);
        if self.out_records >= CHUNK_RECORDS || self.out_bytes >= CHUNK_BYTES {
            // A failed send means shutdown; the loop notices.
            self.send();
        }
    }

    fn emit_records(&mut self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        self.metrics
            .lines_read
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        for rec in records {
            self.emit(Event::Record(rec));
        }
    }

    /// Sends the pending chunk; blocks while the channel is full. False on shutdown.
    fn send(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let chunk = std::mem::take(&mut self.out);
        self.out_records = 0;
        self.out_bytes = 0;
        let (tx, shutdown) = (&self.tx, &self.shutdown);
        // Waiting for the sink is backpressure, not a stuck read.
        self.metrics.progress.idle();
        let sent = self.runtime.block_on(async {
            tokio::select! {
                sent = tx.send(chunk) => sent.is_ok(),
                _ = shutdown.cancelled() => false,
            }
        });
        self.metrics.progress.step();
        sent
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Lists the matching files: opens new ones, notices renamed and deleted ones, wakes dormant
    /// ones that changed, refuses what is not a regular file.
    fn scan(&mut self, first: bool, now: Instant) {
        let mut seen = HashSet::new();
        let scan = self.matcher.scan();
        if !first || self.resumed {
            self.scan_siblings(&scan.found, now);
        }
        let mut refused_now = HashSet::new();
        for path in scan.found {
            self.metrics.progress.step();
            // The entry itself: a link is followed only with --follow-symlinks (and the open
            // below checks where it leads).
            let Ok(mut meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() && self.config.follow_symlinks {
                match std::fs::metadata(&path) {
                    Ok(target) => meta = target,
                    Err(_) => continue,
                }
            }
            let key = (meta.dev(), meta.ino());
            if !meta.is_file() {
                // Never opened for reading: `open` only looks (O_PATH) to say why.
                if let Err(err) = self.opener.open(&path) {
                    self.refuse(&path, key, &err, now);
                }
                refused_now.insert(path);
                continue;
            }
            seen.insert(key);
            if let Some(t) = self.files.get_mut(&key) {
                t.gone_since = None;
                t.missed = false;
                let woken = t.file.is_none() && Stamp::of(&meta) != t.stamp;
                if t.path != path {
                    debug!(from = ?t.path, to = ?path, "followed file renamed");
                    t.path = path;
                    t.lines.set_path(path_str(&t.path));
                    let (id, entry) = (t.id, t.entry());
                    self.emit(Event::Open { id, entry });
                }
                if woken {
                    self.wake(key, now);
                }
                continue;
            }
            if let Some(h) = self.held.get_mut(&key) {
                h.path = path;
                continue;
            }
            if let Err(err) = self.open_new(path.clone(), key, first, now)
                && err.refused()
            {
                refused_now.insert(path);
            }
        }
        self.refused.retain(|path, _| refused_now.contains(path));
        // A directory that could not be listed (out of descriptors, permissions) says nothing
        // about the files in it: none is taken for renamed or deleted on such a scan.
        if scan.complete {
            let mut rotated = 0;
            for (key, t) in self.files.iter_mut() {
                if seen.contains(key) || t.gone_since.is_some() {
                    continue;
                }
                if !t.missed {
                    t.missed = true;
                } else {
                    debug!(path = ?t.path, "followed file renamed away or deleted; reading it to its end");
                    t.gone_since = Some(now);
                    rotated += 1;
                }
            }
            self.metrics.rotations.fetch_add(rotated, Ordering::Relaxed);
        }
        self.truncated
            .retain(|(_, _, at)| now.duration_since(*at) < TRUNCATED_MEMORY);
    }

    /// Logs, once per path (and again if it changes), why a matched path is not followed.
    fn refuse(&mut self, path: &Path, key: (u64, u64), err: &OpenError, now: Instant) {
        if self.refused.get(path) == Some(&key) {
            return;
        }
        self.refused.insert(path.to_owned(), key);
        if let Some(suppressed) = self.warn_refused.allow(now) {
            warn!(%err, suppressed, "not following a matched path");
        }
    }

    /// Opens `path` safely; at the open-file limit, makes the longest-idle file dormant and
    /// tries once more.
    fn open_file(
        &mut self,
        path: &Path,
        now: Instant,
    ) -> Result<crate::tail::open::Opened, OpenError> {
        self.metrics.progress.step();
        match self.opener.open(path) {
            Err(err) if err.out_of_fds() && self.evict_idle(now) => self.opener.open(path),
            other => other,
        }
    }

    /// Reports an open that failed: refusals once per path, failures rate-limited.
    fn open_failed(&mut self, path: &Path, key: (u64, u64), err: &OpenError, now: Instant) {
        if err.refused() {
            self.refuse(path, key, err, now);
        } else if err.vanished() {
            debug!(?path, "file vanished before it was opened");
        } else if let Some(suppressed) = self.warn_open.allow(now) {
            warn!(err = %crate::cli::error_chain(err), suppressed, "failed to open log file; will retry");
        }
    }

    /// Logs how many warnings each budget left out once its window is over.
    fn report_suppressed(&mut self, now: Instant) {
        for (throttle, what) in [
            (&mut self.warn_open, "failed opens"),
            (&mut self.warn_refused, "refused paths"),
            (&mut self.warn_read, "failed reads"),
        ] {
            if let Some(suppressed) = throttle.overdue(now) {
                warn!(suppressed, what, "warnings left out in the last window");
            }
        }
    }

    /// Picks up rotation siblings (`app.log.1`, `app.log-20240101`) of matched files that this run
    /// never saw: a file created and rotated away between two scans (under heavy load, or with
    /// very frequent rotation) would otherwise be lost. Only files modified since this run
    /// started, and not already read, are taken.
    fn scan_siblings(&mut self, matched: &[PathBuf], now: Instant) {
        let mut dirs: HashMap<&Path, Vec<String>> = HashMap::new();
        for path in matched {
            if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
                dirs.entry(dir)
                    .or_default()
                    .push(name.to_string_lossy().into_owned());
            }
        }
        for (dir, names) in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let fname = entry.file_name();
                let fname = fname.to_string_lossy();
                let sibling = names.iter().any(|n| {
                    fname.strip_prefix(n.as_str()).is_some_and(|rest| {
                        let digits = rest.strip_prefix('.').or_else(|| rest.strip_prefix('-'));
                        digits
                            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    })
                });
                let path = entry.path();
                if !sibling || self.matcher.matches(&path) || self.matcher.excluded(&path) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                let key = (meta.dev(), meta.ino());
                if !meta.is_file()
                    || self.files.contains_key(&key)
                    || self.held.contains_key(&key)
                    || meta.modified().map_or(true, |m| m < self.started)
                {
                    continue;
                }
                let Ok(opened) = self.open_file(&path, now) else {
                    continue;
                };
                let file = opened.file;
                if let Some((fp, _)) = self.done.get(&key)
                    && Fingerprint::read(&file, fp.len).is_ok_and(|now| now == *fp)
                {
                    continue;
                }
                let Ok(meta) = file.metadata() else { continue };
                if (meta.dev(), meta.ino()) != key {
                    continue;
                }
                let size = meta.len();
                let Ok(head) = read_head(&file, size.min(FINGERPRINT_MAX)) else {
                    continue;
                };
                match self.start_offset(key, &file, size, &head, false, now, now) {
                    Some(offset) => {
                        info!(?path, "picking up a file rotated before it was seen");
                        self.track(path, file, key, head, offset, Some(now), now);
                    }
                    None => {
                        self.held.insert(
                            key,
                            Held {
                                path,
                                file,
                                since: now,
                            },
                        );
                    }
                }
            }
        }
        self.done
            .retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(600));
    }

    /// Where to start in a file seen for the first time (held since `since`); `None` holds it
    /// back for now.
    #[allow(clippy::too_many_arguments)]
    fn start_offset(
        &mut self,
        key: (u64, u64),
        file: &File,
        size: u64,
        head: &[u8],
        first: bool,
        now: Instant,
        since: Instant,
    ) -> Option<u64> {
        if let Some(i) = self.checkpoints.iter().position(|e| (e.dev, e.ino) == key) {
            let entry = self.checkpoints.swap_remove(i);
            let same = Fingerprint::read(file, entry.fingerprint.len)
                .is_ok_and(|now| now == entry.fingerprint);
            if same && entry.offset <= size {
                debug!(path = ?entry.path, offset = entry.offset, "resuming from checkpoint");
                return Some(entry.offset);
            }
            info!(path = ?entry.path, "file changed since its checkpoint; reading it from the start");
            return Some(0);
        }
        if first {
            return Some(match self.config.read_from {
                ReadFrom::Tail => size,
                ReadFrom::Head => 0,
            });
        }
        // A copy made by copytruncate? Compare first bytes with truncated and followed files
        // (dormant ones that start the same way are opened again to compare their ends).
        self.wake_lookalikes(head, now);
        if let Some(i) = self.truncated.iter().position(|(old, _, _)| {
            !old.is_empty() && same_prefix(old, head) && head.len() >= old.len()
        }) {
            let (_, offset, _) = self.truncated.swap_remove(i);
            debug!(
                offset,
                "copy of a truncated file; reading it from where the original stopped"
            );
            return Some(offset.min(size));
        }
        let copy_of_truncated = self
            .truncated
            .iter()
            .any(|(old, _, _)| !old.is_empty() && same_prefix(old, head));
        // A copy of a followed file holds nothing new as long as it matches the original
        // (logrotate may fsync the copy for seconds before it truncates): no time limit.
        let copy_of_live = self.files.values().any(|t| {
            t.gone_since.is_none()
                && !t.head.is_empty()
                && same_prefix(&t.head, head)
                && t.file.as_ref().is_some_and(|f| same_end(file, size, f))
        });
        // Or a copy whose original was truncated since the last read pass: wait for that pass to
        // note the offset reached.
        let original_truncated = self.files.values().any(|t| {
            t.gone_since.is_none()
                && !t.head.is_empty()
                && same_prefix(&t.head, head)
                && t.file
                    .as_ref()
                    .is_some_and(|f| f.metadata().is_ok_and(|m| m.len() < t.offset))
        });
        if copy_of_live || original_truncated {
            return None;
        }
        // Same first bytes but not (yet) the same end: a copy being written (logrotate may size
        // it first and fill it after), or a new file that starts like an old one.
        let prefix_of_live = self
            .files
            .values()
            .any(|t| t.gone_since.is_none() && !t.head.is_empty() && same_prefix(&t.head, head));
        debug!(
            size,
            head = head.len(),
            copy_of_truncated,
            prefix_of_live,
            "new file starts like a followed or truncated one"
        );
        if copy_of_truncated || prefix_of_live {
            if now.duration_since(since) < self.config.rotate_wait {
                return None;
            }
            debug!(
                "file kept the first bytes of a truncated file but did not grow into a copy; reading it as a new file"
            );
        }
        Some(0)
    }

    /// Decides on held files: start them once they are known to be copies (or not).
    fn decide_held(&mut self, now: Instant) {
        let keys: Vec<_> = self.held.keys().copied().collect();
        for key in keys {
            self.metrics.progress.step();
            let Some(h) = self.held.remove(&key) else {
                continue;
            };
            let Ok(meta) = h.file.metadata() else {
                continue;
            };
            let size = meta.len();
            let Ok(head) = read_head(&h.file, size.min(FINGERPRINT_MAX)) else {
                continue;
            };
            match self.start_offset(key, &h.file, size, &head, false, now, h.since) {
                Some(offset) => self.track(h.path, h.file, key, head, offset, None, now),
                // A deleted copy that still matches its original has nothing to add.
                None if meta.nlink() == 0 => {
                    debug!(path = ?h.path, "held copy deleted");
                }
                None => {
                    self.held.insert(key, h);
                }
            }
        }
    }

    /// Opens a file the scan found at `path` as `key`, and follows it (or holds it back).
    fn open_new(
        &mut self,
        path: PathBuf,
        key: (u64, u64),
        first: bool,
        now: Instant,
    ) -> Result<(), OpenError> {
        let file = match self.open_file(&path, now) {
            Ok(opened) => opened.file,
            Err(err) => {
                self.open_failed(&path, key, &err, now);
                return Err(err);
            }
        };
        // Size from the open file: the path may have been replaced since the scan's stat.
        let Ok(meta) = file.metadata() else {
            return Ok(());
        };
        if (meta.dev(), meta.ino()) != key {
            return Ok(());
        }
        let size = meta.len();
        let Ok(head) = read_head(&file, size.min(FINGERPRINT_MAX)) else {
            return Ok(());
        };
        match self.start_offset(key, &file, size, &head, first, now, now) {
            Some(offset) => self.track(path, file, key, head, offset, None, now),
            None => {
                debug!(
                    ?path,
                    "new file starts like a followed one; holding it back"
                );
                self.held.insert(
                    key,
                    Held {
                        path,
                        file,
                        since: now,
                    },
                );
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn track(
        &mut self,
        path: PathBuf,
        file: File,
        key: (u64, u64),
        head: Vec<u8>,
        offset: u64,
        gone_since: Option<Instant>,
        now: Instant,
    ) {
        let id = self.new_id();
        info!(?path, offset, "following file");
        let lines = LineReader::new(id, path_str(&path), offset, &self.config);
        let stamp = file.metadata().map(|m| Stamp::of(&m)).unwrap_or_default();
        let t = Tracked {
            id,
            path,
            file: Some(file),
            stamp,
            dev: key.0,
            ino: key.1,
            fp: Fingerprint::of(&head),
            head,
            offset,
            // What is there to read: a file not read yet is not "at its end".
            size: stamp.size.max(offset),
            lines,
            gone_since,
            missed: false,
            last_growth: now,
        };
        let entry = t.entry();
        self.files.insert(key, t);
        self.count_open();
        self.emit(Event::Open { id, entry });
    }

    /// After a restart: checkpointed files that no glob matches any more were renamed while we
    /// were down; find them next to their old path by inode and read them to their end.
    fn resume_renamed(&mut self, now: Instant) {
        for entry in std::mem::take(&mut self.checkpoints) {
            let dir = entry.path.parent().unwrap_or(Path::new("."));
            let found = std::fs::read_dir(dir).ok().and_then(|entries| {
                entries.flatten().find_map(|e| {
                    let meta = e.metadata().ok()?;
                    ((meta.dev(), meta.ino()) == (entry.dev, entry.ino)).then(|| (e.path(), meta))
                })
            });
            let Some((path, meta)) = found else {
                if entry.closed_at_ms.is_some() {
                    continue;
                }
                warn!(path = ?entry.path, offset = entry.offset, "checkpointed file is gone; lines written after the checkpoint cannot be read");
                continue;
            };
            let key = (entry.dev, entry.ino);
            let file = match self.open_file(&path, now) {
                Ok(opened) if (opened.dev, opened.ino) == key => opened.file,
                Ok(_) => continue,
                Err(err) => {
                    self.open_failed(&path, key, &err, now);
                    continue;
                }
            };
            let Ok(head) = read_head(&file, entry.fingerprint.len) else {
                continue;
            };
            if Fingerprint::of(&head) != entry.fingerprint || entry.offset > meta.len() {
                warn!(path = ?entry.path, "checkpointed file was replaced; skipping it");
                continue;
            }
            info!(from = ?entry.path, to = ?path, "checkpointed file was renamed; reading it to its end");
            self.track(path, file, key, head, entry.offset, Some(now), now);
        }
    }

    /// One read pass over every followed file; true if some file stopped at its share of the
    /// pass (`PASS_BYTES`) with more to read.
    fn read_all(&mut self, now: Instant) -> bool {
        let keys: Vec<_> = self.files.keys().copied().collect();
        let (mut unread, mut backlog) = (0, false);
        for key in keys {
            let (left, full) = self.read_file(key, now);
            unread += left;
            backlog |= full && left > 0;
        }
        self.metrics.unread_bytes.store(unread, Ordering::Relaxed);
        backlog
    }

    /// Reads what is new in one file; returns the bytes left unread and whether the read
    /// stopped at `PASS_BYTES`.
    fn read_file(&mut self, key: (u64, u64), now: Instant) -> (u64, bool) {
        let Some(mut t) = self.files.remove(&key) else {
            return (0, false);
        };
        let mut records = Vec::new();
        // Dormant: the scan wakes it when it changes.
        let Some(file) = t.file.take() else {
            t.lines.flush_due(now, &mut records);
            self.emit_records(records);
            self.files.insert(key, t);
            return (0, false);
        };
        self.metrics.progress.step();
        let stamp = file.metadata().map(|m| Stamp::of(&m)).ok();
        let size = stamp.map_or(t.size, |s| s.size);
        // Any change (to the nanosecond) gets its first bytes compared: a file truncated and
        // rewritten to the same size between two passes is a new stream too.
        let changed = stamp.is_some_and(|s| s != t.stamp);
        if size < t.offset || (changed && t.fp.len > 0 && replaced(&file, &t.fp)) {
            self.metrics.truncations.fetch_add(1, Ordering::Relaxed);
            info!(path = ?t.path, offset = t.offset, size, "file truncated; reading it from the start");
            self.truncated
                .push((std::mem::take(&mut t.head), t.offset, now));
            t.lines.finish(now, &mut records);
            self.emit_records(std::mem::take(&mut records));
            self.emit(Event::Close { id: t.id });
            t.id = self.new_id();
            t.offset = 0;
            t.head = read_head(&file, size.min(FINGERPRINT_MAX)).unwrap_or_default();
            t.fp = Fingerprint::of(&t.head);
            t.lines = LineReader::new(t.id, path_str(&t.path), 0, &self.config);
            let (id, entry) = (t.id, t.entry());
            self.emit(Event::Open { id, entry });
        }
        // One read buffer for all files (allocating and zeroing it per file per pass costs more
        // than the reads when hundreds of rotated files are open).
        let mut buf = std::mem::take(&mut self.buf);
        let mut read = 0;
        // Nothing new (the common case for rotated files waiting to be closed): skip the read.
        let nothing_new = size <= t.offset;
        while !nothing_new && read < PASS_BYTES {
            // The fast path reads after the partial line, so complete lines are one slice.
            let carried = if t.lines.blocks() {
                t.lines.partial().len()
            } else {
                0
            };
            if buf.len() < carried + READ_BYTES {
                buf.resize(carried + READ_BYTES, 0);
            }
            if carried > 0 {
                buf[..carried].copy_from_slice(t.lines.partial());
                t.lines.clear_partial();
            }
            self.metrics.progress.step();
            match file.read_at(&mut buf[carried..carried + READ_BYTES], t.offset) {
                Ok(n) if n > 0 => {
                    t.offset += n as u64;
                    read += n as u64;
                    self.metrics
                        .bytes_read
                        .fetch_add(n as u64, Ordering::Relaxed);
                    if t.lines.blocks() {
                        let data = &buf[..carried + n];
                        if let Some(lines) = t.lines.push_bytes(data, now, &mut records) {
                            self.metrics
                                .lines_read
                                .fetch_add(lines.count, Ordering::Relaxed);
                            self.emit(Event::Lines(lines));
                        }
                    } else {
                        t.lines.push(&buf[..n], now, &mut records);
                    }
                    self.emit_records(std::mem::take(&mut records));
                    // A short read is the end of the file for now: no second read to learn it.
                    if n < READ_BYTES {
                        break;
                    }
                }
                result => {
                    // Nothing read: the partial line goes back where it was.
                    t.lines.push(&buf[..carried], now, &mut records);
                    match result {
                        Ok(_) => break,
                        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(err) => {
                            if let Some(suppressed) = self.warn_read.allow(now) {
                                warn!(?err, path = ?t.path, suppressed, "failed to read log file; will retry");
                            }
                            break;
                        }
                    }
                }
            }
        }
        self.buf = buf;
        if read > 0 {
            t.last_growth = now;
        }
        t.size = t.offset.max(size);
        if let Some(stamp) = stamp {
            t.stamp = stamp;
        }
        if t.fp.len < FINGERPRINT_MAX
            && t.offset > t.fp.len
            && let Ok(head) = read_head(&file, t.offset.min(FINGERPRINT_MAX))
        {
            t.fp = Fingerprint::of(&head);
            t.head = head;
            let (id, entry) = (t.id, t.entry());
            self.emit(Event::Open { id, entry });
        }
        t.lines.flush_due(now, &mut records);
        self.emit_records(records);
        let unread = size.saturating_sub(t.offset);
        t.file = Some(file);
        self.files.insert(key, t);
        (unread, read >= PASS_BYTES)
    }

    /// Closes files that left the globs, were read to their end and stayed quiet.
    fn close_gone(&mut self, now: Instant) {
        let wait = self.config.rotate_wait;
        let done: Vec<_> = self
            .files
            .iter()
            .filter(|(_, t)| {
                t.gone_since
                    .is_some_and(|g| now >= g.max(t.last_growth) + wait)
                    && t.size <= t.offset
                    // Dormant: it was at its end and nothing has woken it.
                    && t
                        .file
                        .as_ref()
                        .is_none_or(|f| f.metadata().is_ok_and(|m| m.len() <= t.offset))
            })
            .map(|(k, _)| *k)
            .collect();
        for key in done {
            let Some(mut t) = self.files.remove(&key) else {
                continue;
            };
            debug!(path = ?t.path, "closing rotated file");
            self.done.insert(key, (t.fp, now));
            let mut records = Vec::new();
            t.lines.finish(now, &mut records);
            self.emit_records(records);
            self.emit(Event::Close { id: t.id });
        }
        self.count_open();
    }

    /// Closes the descriptors of followed files at their end that have not grown for
    /// `--close-inactive`; they stay followed, dormant (see the module doc).
    fn close_inactive(&mut self, now: Instant) {
        let after = self.config.close_inactive;
        let mut closed = false;
        for t in self.files.values_mut() {
            if t.file.is_some()
                && t.gone_since.is_none()
                && t.size <= t.offset
                && now >= t.last_growth + after
            {
                debug!(path = ?t.path, "closing an inactive file; it is opened again when it changes");
                t.file = None;
                closed = true;
            }
        }
        if closed {
            self.count_open();
        }
    }

    /// At the open-file limit: makes the followed file idle the longest (at its end, still
    /// matched) dormant. False if there is none.
    fn evict_idle(&mut self, now: Instant) -> bool {
        let idlest = self
            .files
            .iter()
            .filter(|(_, t)| t.file.is_some() && t.gone_since.is_none() && t.size <= t.offset)
            .min_by_key(|(_, t)| t.last_growth)
            .map(|(k, _)| *k);
        let Some(t) = idlest.and_then(|key| self.files.get_mut(&key)) else {
            return false;
        };
        debug!(path = ?t.path, idle = ?now.duration_since(t.last_growth), "out of file descriptors: closing the idlest file until it changes");
        t.file = None;
        self.count_open();
        true
    }

    /// Opens a dormant file again (its path still names it); false if it cannot be.
    fn wake(&mut self, key: (u64, u64), now: Instant) -> bool {
        let Some(path) = self.files.get(&key).map(|t| t.path.clone()) else {
            return false;
        };
        let opened = match self.open_file(&path, now) {
            Ok(opened) if (opened.dev, opened.ino) == key => opened,
            Ok(_) => return false,
            Err(err) => {
                self.open_failed(&path, key, &err, now);
                return false;
            }
        };
        let Some(t) = self.files.get_mut(&key) else {
            return false;
        };
        debug!(path = ?t.path, "inactive file changed; reading it again");
        t.file = Some(opened.file);
        self.count_open();
        true
    }

    /// Wakes dormant files whose first bytes `head` starts like (a copy may be of them).
    fn wake_lookalikes(&mut self, head: &[u8], now: Instant) {
        let keys: Vec<_> = self
            .files
            .iter()
            .filter(|(_, t)| {
                t.file.is_none()
                    && t.gone_since.is_none()
                    && !t.head.is_empty()
                    && same_prefix(&t.head, head)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.wake(key, now);
        }
    }

    /// `podkit_tail_files_open`: descriptors held (followed files that are not dormant, and
    /// held-back copies).
    fn count_open(&self) {
        let open = self.files.values().filter(|t| t.file.is_some()).count() + self.held.len();
        self.metrics
            .files_open
            .store(open as u64, Ordering::Relaxed);
    }
}

/// Whether the first bytes of `file` are no longer those fingerprinted in `fp` (the file was
/// truncated and rewritten past our offset, or to the same size).
fn replaced(file: &File, fp: &Fingerprint) -> bool {
    Fingerprint::read(file, fp.len).is_ok_and(|now| now != *fp)
}

/// Up to `len` first bytes of `file`, with positioned reads.
pub(crate) fn read_head(file: &File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Whether the last bytes of `copy` (of `size` bytes) are also in `original` at the same offsets.
fn same_end(copy: &File, size: u64, original: &File) -> bool {
    let len = size.min(FINGERPRINT_MAX);
    let (mut a, mut b) = (vec![0; len as usize], vec![0; len as usize]);
    copy.read_exact_at(&mut a, size - len).is_ok()
        && original.read_exact_at(&mut b, size - len).is_ok()
        && a == b
}

/// Whether one is a prefix of the other.
fn same_prefix(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

fn path_str(path: &Path) -> Arc<str> {
    path.to_string_lossy().into()
}
