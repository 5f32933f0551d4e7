//! Globs: which files to follow, which directories to watch, and the scan that lists the
//! matching files.
//!
//! Each `--path` glob is split into a base directory (its leading components without glob
//! characters) and the rest. The scan walks each base directory as deep as the rest can reach
//! (`**` means any depth) and keeps what matches a `--path` glob and no `--exclude` glob. It
//! does not judge what it lists: the reader opens it safely (`open.rs`).

use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Why the globs could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A glob does not parse.
    #[error("failed to parse glob {glob:?} of {flag}")]
    Glob {
        /// `--path` or `--exclude`.
        flag: &'static str,
        /// The glob.
        glob: String,
        /// Cause.
        #[source]
        source: globset::Error,
    },
    /// The set of globs could not be built.
    #[error("failed to build the set of {flag} globs")]
    Set {
        /// `--path` or `--exclude`.
        flag: &'static str,
        /// Cause.
        #[source]
        source: globset::Error,
    },
}

/// A directory to scan and watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Base {
    pub(crate) dir: PathBuf,
    /// How many directory levels below `dir` can match; `None` is unbounded (`**`).
    pub(crate) depth: Option<usize>,
}

/// The compiled `--path` and `--exclude` globs.
#[derive(Debug)]
pub(crate) struct Matcher {
    include: GlobSet,
    exclude: GlobSet,
    bases: Vec<Base>,
}

fn glob(flag: &'static str, pattern: &str) -> Result<Glob, Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|source| Error::Glob {
            flag,
            glob: pattern.to_owned(),
            source,
        })
}

fn set(flag: &'static str, patterns: &[String]) -> Result<GlobSet, Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(glob(flag, pattern)?);
    }
    builder
        .build()
        .map_err(|source| Error::Set { flag, source })
}

fn is_glob(component: &str) -> bool {
    component.contains(['*', '?', '[', '{'])
}

/// Splits `pattern` into the directory to scan and the depth below it.
pub(crate) fn base_of(pattern: &str) -> Base {
    let mut dir = PathBuf::new();
    let components: Vec<Component<'_>> = Path::new(pattern).components().collect();
    let mut rest = 0;
    for (i, c) in components.iter().enumerate() {
        let s = c.as_os_str().to_string_lossy();
        if is_glob(&s) || i == components.len() - 1 {
            rest = components.len() - i;
            break;
        }
        dir.push(c.as_os_str());
    }
    let unbounded = components
        .iter()
        .any(|c| c.as_os_str().to_string_lossy().contains("**"));
    if dir.as_os_str().is_empty() {
        dir.push(".");
    }
    Base {
        dir,
        depth: (!unbounded).then_some(rest.saturating_sub(1)),
    }
}

impl Matcher {
    /// Compiles the globs (they should be absolute: see [`crate::tail::Args`]).
    pub(crate) fn new(paths: &[String], exclude: &[String]) -> Result<Self, Error> {
        let mut bases: Vec<Base> = Vec::new();
        for p in paths {
            let base = base_of(p);
            if !bases.contains(&base) {
                bases.push(base);
            }
        }
        Ok(Matcher {
            include: set("--path", paths)?,
            exclude: set("--exclude", exclude)?,
            bases,
        })
    }

    /// The directories to watch and scan.
    pub(crate) fn bases(&self) -> &[Base] {
        &self.bases
    }

    /// Whether `path` is to be followed.
    pub(crate) fn matches(&self, path: &Path) -> bool {
        self.include.is_match(path) && !self.exclude.is_match(path)
    }

    /// Whether `path` matches an `--exclude` glob.
    pub(crate) fn excluded(&self, path: &Path) -> bool {
        self.exclude.is_match(path)
    }

    /// Lists what matches now: regular files, and anything else that is not a directory (links,
    /// FIFOs, devices), which the reader refuses with a warning (see `open.rs`). Missing
    /// directories are skipped (files may appear there later); a directory that exists but
    /// cannot be listed (e.g. out of file descriptors) makes the scan incomplete, so the reader
    /// does not take its files for deleted.
    pub(crate) fn scan(&self) -> Scan {
        let mut scan = Scan {
            found: Vec::new(),
            complete: true,
        };
        for base in &self.bases {
            self.walk(&base.dir, base.depth, &mut scan);
        }
        scan.found.sort();
        scan.found.dedup();
        scan
    }

    fn walk(&self, dir: &Path, depth: Option<usize>, scan: &mut Scan) {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => {
                scan.complete = false;
                return;
            }
        };
        for entry in entries {
            let Ok(entry) = entry else {
                scan.complete = false;
                return;
            };
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            // Links are listed, not followed: the reader decides (`--follow-symlinks`). A link
            // to a directory is never walked into.
            if file_type.is_dir() {
                if depth != Some(0) {
                    self.walk(&path, depth.map(|d| d - 1), scan);
                }
            } else if self.matches(&path) {
                scan.found.push(path);
            }
        }
    }
}

/// What one scan found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Matching paths (not directories), sorted.
    pub(crate) found: Vec<PathBuf>,
    /// False if a directory could not be listed: a file not found may still be there.
    pub(crate) complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_dirs_and_depths() {
        assert_eq!(
            base_of("/var/log/app/*.log"),
            Base {
                dir: "/var/log/app".into(),
                depth: Some(0)
            }
        );
        assert_eq!(
            base_of("/var/log/*/app.log"),
            Base {
                dir: "/var/log".into(),
                depth: Some(1)
            }
        );
        assert_eq!(
            base_of("/var/log/**/*.log"),
            Base {
                dir: "/var/log".into(),
                depth: None
            }
        );
        assert_eq!(
            base_of("/var/log/app.log"),
            Base {
                dir: "/var/log".into(),
                depth: Some(0)
            }
        );
    }

    #[test]
    fn scan_matches_and_excludes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        for f in ["a.log", "b.log.gz", "c.txt", "sub/d.log"] {
            std::fs::write(d.join(f), b"x\n").expect("write");
        }
        let m = Matcher::new(
            &[format!("{}/*.log*", d.display())],
            &[format!("{}/*.gz", d.display())],
        )
        .expect("globs");
        assert_eq!(m.scan().found, vec![d.join("a.log")]);
        let m = Matcher::new(&[format!("{}/**/*.log", d.display())], &[]).expect("globs");
        assert_eq!(m.scan().found, vec![d.join("a.log"), d.join("sub/d.log")]);
    }
}
