//! `podkit images`, `podkit rmi`, `podkit load` and `podkit image ...`: the image store as
//! podman shows it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use oci::{Digest, ImageSummary, PruneOptions, Reference, Store, StoreError};

use crate::state;

/// The image store under the storage root, created when missing.
pub fn open_store(storage: &Path) -> anyhow::Result<Store> {
    let root = storage.join("images");
    Store::open(&root).with_context(|| {
        format!(
            "failed to open the image store {} (podkit keeps images there: run as root, or \
             choose another directory with --storage or PODKIT_STORAGE)",
            root.display()
        )
    })
}

/// List the images in the store, as `podman images` does.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit images
  podkit images nginx                      (every tag of docker.io/library/nginx)
  podkit images -q                         (image IDs only)
  podkit images -o json")]
pub struct ImagesArgs {
    /// Only images of this name: a repository (any tag), NAME:TAG or NAME@DIGEST.
    #[arg(value_name = "IMAGE")]
    image: Option<String>,

    /// Print only the image IDs.
    #[arg(short, long)]
    quiet: bool,

    /// Output format: json (default: a table).
    #[arg(short, long, visible_alias = "format", value_name = "FORMAT")]
    output: Option<String>,
}

/// Remove images: a name is untagged, and the image goes with its last name, as `podman rmi`
/// does; an image ID removes the image with all its names.
///
/// An image a pod uses (its containers' imageID) is never removed, not even with --force:
/// delete the pod first.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit rmi nginx:1.25
  podkit rmi 0b3c1d9e7f2a                  (by image ID, or a prefix of at least 3 digits)
  podkit rmi -f 0b3c1d9e7f2a               (an image of several names, by ID: every name)

Exit codes: 0 when every image was removed, 1 when one was not (not found, in use by a pod, ...);
the others are still removed.")]
pub struct RmiArgs {
    /// The images: names (NAME[:TAG], NAME@DIGEST) or image IDs.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,

    /// Remove an image named several times by its ID, with all its names. Never an image a
    /// pod uses.
    #[arg(short, long)]
    force: bool,
}

/// Load images from an archive into the store, as `podman load` does.
///
/// Reads docker-archive (what `docker save` and `podman save` write), oci-archive
/// (`podman save --format oci-archive`) and OCI image layout directories; the images keep the
/// names the archive gives them.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit load -i nginx.tar                 (from docker save nginx > nginx.tar)
  podkit load -i app.oci.tar               (an oci-archive)
  podkit load -i ./layout                  (an OCI image layout directory)")]
pub struct LoadArgs {
    /// The archive file or layout directory.
    #[arg(short, long, value_name = "FILE", required = true)]
    input: PathBuf,

    /// Print nothing.
    #[arg(short, long)]
    quiet: bool,
}

/// Manage images (podman's `image` verbs).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit image prune
  podkit image prune -a
  podkit image ls")]
pub struct ImageArgs {
    #[command(subcommand)]
    verb: ImageVerb,
}

#[derive(Debug, clap::Subcommand)]
enum ImageVerb {
    Prune(PruneArgs),
    /// List the images in the store (`podkit images`).
    #[command(visible_alias = "list")]
    Ls(ImagesArgs),
    /// Remove images (`podkit rmi`).
    Rm(RmiArgs),
    /// Pull an image (`podkit pull`).
    Pull(super::pull::PullArgs),
    /// Load images from an archive (`podkit load`).
    Load(LoadArgs),
}

/// Remove the images no pod uses and that have no name (an older image of a name pulled
/// again), or with -a every image no pod uses; then every layer no image uses.
///
/// Prints the IDs of the images removed, then the space freed.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  podkit image prune
  podkit image prune -a                    (also named images no pod uses)")]
pub struct PruneArgs {
    /// Remove every image no pod uses, not only the unnamed ones.
    #[arg(short, long)]
    all: bool,

    /// Accepted for podman's command line: podkit does not ask before pruning.
    #[arg(short, long)]
    force: bool,
}

pub fn image(root: &Path, storage: &Path, args: ImageArgs) -> anyhow::Result<ExitCode> {
    match args.verb {
        ImageVerb::Prune(args) => prune(root, storage, args),
        ImageVerb::Ls(args) => images(storage, args),
        ImageVerb::Rm(args) => rmi(root, storage, args),
        ImageVerb::Pull(args) => super::pull::pull(storage, args),
        ImageVerb::Load(args) => load(storage, args),
    }
}

pub fn images(storage: &Path, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    if args.output.as_deref().is_some_and(|o| o != "json") {
        bail!(
            "unknown output format {:?}: use json (or no -o for a table)",
            args.output.unwrap_or_default()
        );
    }
    let filter = args.image.as_deref().map(Filter::parse).transpose()?;
    // Listing needs no store: nothing pulled yet is an empty list, also for a user who may not
    // create /var/lib/podkit.
    let mut images = if storage.join("images").exists() {
        open_store(storage)?.images()?
    } else {
        Vec::new()
    };
    if let Some(filter) = &filter {
        images.retain(|image| filter.matches(image));
    }
    // Newest first, as podman sorts.
    images.sort_by_key(|image| std::cmp::Reverse(image.created));
    if args.quiet {
        let mut seen = Vec::new();
        for image in &images {
            if !seen.contains(&image.id) {
                println!("{}", image.id.short());
                seen.push(image.id.clone());
            }
        }
    } else if args.output.is_some() {
        let json: Vec<_> = images.iter().map(image_json).collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", table(&images, jiff::Timestamp::now()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `podkit images IMAGE`: a bare name matches every tag of the repository, as podman's does.
#[derive(Debug)]
struct Filter {
    reference: Reference,
    /// Whether a tag or digest was given (`nginx:1.25`), not only a name (`nginx`).
    exact: bool,
}

impl Filter {
    fn parse(text: &str) -> anyhow::Result<Filter> {
        let reference = Reference::parse(text)?;
        let last = text.rsplit('/').next().unwrap_or(text);
        Ok(Filter {
            reference,
            exact: last.contains(':') || last.contains('@'),
        })
    }

    fn matches(&self, image: &ImageSummary) -> bool {
        image.references.iter().any(|name| {
            if !self.exact {
                return name.name() == self.reference.name();
            }
            match self.reference.digest() {
                Some(digest) => {
                    name.name() == self.reference.name() && digest == &image.manifest_digest
                }
                None => name == &self.reference,
            }
        })
    }
}

/// podman's columns: a row per name, `<none>` for what an image lacks.
fn table(images: &[ImageSummary], now: jiff::Timestamp) -> String {
    let mut rows = vec![
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for image in images {
        let created = image
            .created
            .map_or_else(|| "<unknown>".to_owned(), |at| ago(now, at));
        let size = si_size(image.size);
        let names: Vec<(String, String)> = if image.references.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            image
                .references
                .iter()
                .map(|r| (r.name(), r.tag().unwrap_or("<none>").to_owned()))
                .collect()
        };
        for (repository, tag) in names {
            rows.push(vec![
                repository,
                tag,
                image.id.short().to_owned(),
                created.clone(),
                size.clone(),
            ]);
        }
    }
    super::render_table(&rows, "  ")
}

/// One image in `podman images --format json`'s fields.
fn image_json(image: &ImageSummary) -> serde_json::Value {
    let names: Vec<String> = image.references.iter().map(ToString::to_string).collect();
    let tags: Vec<String> = image
        .references
        .iter()
        .filter(|r| r.tag().is_some())
        .map(|r| format!("{}:{}", r.name(), r.tag().unwrap_or_default()))
        .collect();
    let mut repo_digests: Vec<String> = image
        .references
        .iter()
        .map(|r| format!("{}@{}", r.name(), image.manifest_digest))
        .collect();
    repo_digests.dedup();
    serde_json::json!({
        "Id": image.id.hex(),
        "Digest": image.manifest_digest.to_string(),
        "RepoTags": tags,
        "RepoDigests": repo_digests,
        "Names": names,
        "Created": image.created.map(|t| t.as_second()),
        "CreatedAt": image.created.map(|t| t.to_string()),
        "Size": image.size,
    })
}

/// Docker's (go-units') HumanDuration with " ago": `About an hour ago`, `3 weeks ago`.
fn ago(now: jiff::Timestamp, then: jiff::Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(then.as_second());
    if seconds < 0 {
        return "Less than a second ago".into();
    }
    let (minutes, hours) = (seconds / 60, (seconds as f64 / 3600.0).round() as i64);
    let text = match seconds {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        2..60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_owned(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_owned(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    };
    format!("{text} ago")
}

/// Decimal units with 3 significant digits and a space, as `podman images` shows sizes:
/// `999 B`, `5.86 kB`, `191 MB`.
fn si_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = match value {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    let mut number = format!("{value:.decimals$}");
    if number.contains('.') {
        number = number
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned();
    }
    format!("{number} {}", units[unit])
}

pub fn rmi(root: &Path, storage: &Path, args: RmiArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(storage)?;
    let in_use = state::images_in_use(root, &store)
        .context("failed to read the pods' state to find the images they use")?;
    let mut code = ExitCode::SUCCESS;
    for name in &args.images {
        if let Err(err) = rmi_one(&store, name, args.force, &in_use) {
            eprintln!("error: {err:#}");
            code = ExitCode::FAILURE;
        }
    }
    Ok(code)
}

fn rmi_one(
    store: &Store,
    name: &str,
    force: bool,
    in_use: &BTreeMap<Digest, Vec<String>>,
) -> anyhow::Result<()> {
    let Some(image) = store.lookup(name)? else {
        let hint = match Reference::parse(name) {
            Ok(reference) => format!("{name}: image not known (no {reference} in the store)"),
            Err(err) => format!("{name}: image not known ({err})"),
        };
        bail!(hint);
    };
    if let Some(pods) = in_use.get(&image.id) {
        bail!(
            "image {name} ({}) is in use by pod {}: delete the pod first (podkit delete pod NAME)",
            image.id.short(),
            pods.join(", ")
        );
    }
    let before = names_of(store, &image.manifest_digest)?;
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    let by_id = hex.len() >= 3 && image.id.hex().starts_with(hex);
    if by_id {
        if before.len() > 1 && !force {
            let names: Vec<String> = before.iter().map(ToString::to_string).collect();
            bail!(
                "unable to delete image {} by ID with more than one name ({}): name one, or \
                 force removal with -f",
                image.id.short(),
                names.join(", ")
            );
        }
        store.remove_image(&image.manifest_digest)?;
    } else {
        // lookup found it by this name, so it parses.
        let reference = Reference::parse(name)?;
        store.remove(&reference)?;
    }
    let after = names_of(store, &image.manifest_digest)?;
    for untagged in before.iter().filter(|r| !after.contains(r)) {
        println!("Untagged: {untagged}");
    }
    let gone = !store
        .images()?
        .iter()
        .any(|i| i.manifest_digest == image.manifest_digest);
    if gone {
        println!("Deleted: {}", image.id.hex());
    }
    Ok(())
}

/// The names of a manifest in the store.
fn names_of(store: &Store, manifest: &Digest) -> Result<Vec<Reference>, StoreError> {
    Ok(store
        .images()?
        .into_iter()
        .filter(|i| &i.manifest_digest == manifest)
        .flat_map(|i| i.references)
        .collect())
}

fn prune(root: &Path, storage: &Path, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let _ = args.force; // podman's -f: podkit has nothing to confirm.
    let store = open_store(storage)?;
    let in_use = state::images_in_use(root, &store)
        .context("failed to read the pods' state to find the images they use")?;
    let report = store.prune(&PruneOptions {
        all: args.all,
        in_use: in_use.into_keys().collect(),
    })?;
    for id in &report.images {
        println!("{}", id.hex());
    }
    println!(
        "Total reclaimed space: {} ({} blobs, {} unpacked layers)",
        si_size(report.blob_bytes),
        report.blobs,
        report.layers
    );
    Ok(ExitCode::SUCCESS)
}

pub fn load(storage: &Path, args: LoadArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(storage)?;
    let loaded = oci::load(&store, &args.input)
        .with_context(|| format!("failed to load images from {}", args.input.display()))?;
    if !args.quiet {
        for image in &loaded {
            if image.references.is_empty() {
                println!("Loaded image: {}", image.id);
            }
            for name in &image.references {
                println!("Loaded image: {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Timestamp};

    #[test]
    fn sizes_as_podman_shows_them() {
        assert_eq!(super::si_size(0), "0 B");
        assert_eq!(super::si_size(999), "999 B");
        assert_eq!(super::si_size(5_860), "5.86 kB");
        assert_eq!(super::si_size(1_200_000), "1.2 MB");
        assert_eq!(super::si_size(191_000_000), "191 MB");
        assert_eq!(super::si_size(12_340_000_000), "12.3 GB");
    }

    #[test]
    fn ages_as_podman_shows_them() {
        let now = Timestamp::from_second(2_000_000_000).expect("time");
        let ago = |secs: i64| super::ago(now, now - SignedDuration::from_secs(secs));
        assert_eq!(ago(0), "Less than a second ago");
        assert_eq!(ago(30), "30 seconds ago");
        assert_eq!(ago(90), "About a minute ago");
        assert_eq!(ago(3600), "About an hour ago");
        assert_eq!(ago(5 * 3600), "5 hours ago");
        assert_eq!(ago(3 * 86400), "3 days ago");
        assert_eq!(ago(21 * 86400), "3 weeks ago");
        assert_eq!(ago(90 * 86400), "3 months ago");
        assert_eq!(ago(3 * 365 * 86400), "3 years ago");
    }
}
