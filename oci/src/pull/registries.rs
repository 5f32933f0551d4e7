//! `registries.conf` (version 2, TOML) as podman reads it: `$CONTAINERS_REGISTRIES_CONF`, else
//! `~/.config/containers/registries.conf` when it exists, else
//! `/etc/containers/registries.conf` with the drop-ins of `/etc/containers/registries.conf.d/`.
//! (containers/image also reads the drop-ins when the variable is set; podkit takes the
//! variable to name the whole configuration, which keeps a test's configuration its own.)
//!
//! Honoured per `[[registry]]`: `prefix` (a host, a namespace, or `*.domain`), `location` (the
//! prefix rewritten), `insecure` (plain http), `blocked`, `mirror-by-digest-only`, and its
//! `[[registry.mirror]]` entries (`location`, `insecure`, `pull-from-mirror`), tried in order
//! before the registry itself. `unqualified-search-registries` is read and kept; image names are
//! normalised to Docker Hub as kubelet does before any registry is chosen, so it picks nothing.
//! Short-name `[aliases]` are not read, for the same reason.

use std::path::{Path, PathBuf};

use super::PullError;
use crate::reference::Reference;

/// The parsed configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    /// `unqualified-search-registries`.
    pub unqualified_search_registries: Vec<String>,
    registries: Vec<Registry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    #[serde(default)]
    unqualified_search_registries: Option<Vec<String>>,
    #[serde(default)]
    registry: Vec<Registry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Registry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<Mirror>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Mirror {
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: Option<String>,
}

/// One place to try to pull an image from: a mirror or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The image's name there.
    pub reference: Reference,
    /// Plain http instead of https.
    pub insecure: bool,
    /// A mirror (tried before the registry; its failure is logged and the next one tried).
    pub mirror: bool,
}

impl RegistriesConf {
    /// The configuration podman would use, from the environment and the usual files.
    pub fn from_env() -> Result<RegistriesConf, PullError> {
        if let Some(path) = std::env::var_os("CONTAINERS_REGISTRIES_CONF").filter(|v| !v.is_empty())
        {
            return RegistriesConf::load(Path::new(&path), &[]);
        }
        if let Some(home) = std::env::var_os("HOME") {
            let user = PathBuf::from(home).join(".config/containers/registries.conf");
            if user.exists() {
                return RegistriesConf::load(&user, &[]);
            }
        }
        let drop_ins = PathBuf::from("/etc/containers/registries.conf.d");
        RegistriesConf::load(Path::new("/etc/containers/registries.conf"), &[drop_ins])
    }

    /// `file` (absent = empty), then the `*.conf` files of `drop_in_dirs` in name order, each
    /// replacing the registries of the same prefix and, when it sets them, the search list.
    pub fn load(file: &Path, drop_in_dirs: &[PathBuf]) -> Result<RegistriesConf, PullError> {
        let mut conf = RegistriesConf::default();
        let mut files = vec![file.to_owned()];
        for dir in drop_in_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            names.sort();
            files.extend(names);
        }
        for path in files {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(PullError::RegistriesConfRead { path, source }),
            };
            conf.merge(&text, &path)?;
        }
        Ok(conf)
    }

    /// Parses one file's text.
    pub fn parse(text: &str) -> Result<RegistriesConf, PullError> {
        let mut conf = RegistriesConf::default();
        conf.merge(text, Path::new("<registries.conf>"))?;
        Ok(conf)
    }

    fn merge(&mut self, text: &str, path: &Path) -> Result<(), PullError> {
        let file: File = toml::from_str(text).map_err(|source| PullError::RegistriesConf {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        if let Some(search) = file.unqualified_search_registries {
            self.unqualified_search_registries = search;
        }
        for mut registry in file.registry {
            if registry.prefix.is_empty() {
                registry.prefix = registry.location.clone();
            }
            if registry.prefix.is_empty() {
                return Err(PullError::RegistryEntry {
                    path: path.to_owned(),
                    problem: "a [[registry]] has neither prefix nor location",
                });
            }
            if registry.prefix.starts_with("*.") && !registry.location.is_empty() {
                return Err(PullError::RegistryEntry {
                    path: path.to_owned(),
                    problem: "a wildcard prefix cannot have a location",
                });
            }
            self.registries.retain(|r| r.prefix != registry.prefix);
            self.registries.push(registry);
        }
        Ok(())
    }

    /// Where to pull `reference` from, in order: the mirrors that apply, then the registry.
    pub fn endpoints(&self, reference: &Reference) -> Result<Vec<Endpoint>, PullError> {
        let name = reference.name();
        let Some(registry) = self.find(&name) else {
            return Ok(vec![Endpoint {
                reference: reference.clone(),
                insecure: false,
                mirror: false,
            }]);
        };
        if registry.blocked {
            return Err(PullError::Blocked {
                reference: reference.to_string(),
                prefix: registry.prefix.clone(),
            });
        }
        let rest = match registry.prefix.strip_prefix("*.") {
            Some(_) => None,
            None => Some(&name[registry.prefix.len()..]),
        };
        let rewrite = |location: &str| -> Result<Reference, PullError> {
            let full = match rest {
                Some(rest) if !location.is_empty() => format!("{location}{rest}"),
                _ => name.clone(),
            };
            let (host, repository) = full.split_once('/').unwrap_or((full.as_str(), ""));
            let check = format!("{host}/{repository}");
            Reference::parse(&check).map_err(|source| PullError::Location {
                location: location.to_owned(),
                source,
            })?;
            Ok(reference.at(host, repository))
        };
        let mut endpoints = Vec::new();
        for mirror in &registry.mirror {
            let digest_only = match mirror.pull_from_mirror.as_deref() {
                Some("digest-only") => true,
                Some("tag-only") => {
                    if reference.digest().is_some() {
                        continue;
                    }
                    false
                }
                _ => registry.mirror_by_digest_only,
            };
            if digest_only && reference.digest().is_none() {
                continue;
            }
            endpoints.push(Endpoint {
                reference: rewrite(&mirror.location)?,
                insecure: mirror.insecure,
                mirror: true,
            });
        }
        endpoints.push(Endpoint {
            reference: rewrite(&registry.location)?,
            insecure: registry.insecure,
            mirror: false,
        });
        Ok(endpoints)
    }

    /// The registry entry whose prefix matches `name` best (the longest prefix).
    fn find(&self, name: &str) -> Option<&Registry> {
        let host = name.split('/').next().unwrap_or(name);
        self.registries
            .iter()
            .filter(|r| match r.prefix.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => name == r.prefix || name.starts_with(&format!("{}/", r.prefix)),
            })
            .max_by_key(|r| {
                if r.prefix.starts_with("*.") {
                    0
                } else {
                    r.prefix.len()
                }
            })
    }

    /// Whether pulls from `registry` (a host) go over plain http.
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.find(registry).is_some_and(|r| r.insecure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn endpoints(conf: &str, image: &str) -> Vec<(String, bool)> {
        let conf = RegistriesConf::parse(conf).expect("parse");
        let reference = Reference::parse(image).expect("reference");
        conf.endpoints(&reference)
            .expect("endpoints")
            .into_iter()
            .map(|e| (e.reference.to_string(), e.insecure))
            .collect()
    }

    #[test]
    fn no_entry_is_the_registry_itself() {
        assert_eq!(
            endpoints("", "nginx"),
            [("docker.io/library/nginx:latest".to_owned(), false)]
        );
    }

    #[test]
    fn insecure_and_mirrors() {
        let conf = r#"
            unqualified-search-registries = ["docker.io"]
            [[registry]]
            location = "127.0.0.1:5000"
            insecure = true

            [[registry]]
            prefix = "docker.io"
            location = "docker.io"
            [[registry.mirror]]
            location = "127.0.0.1:5001/hub"
            insecure = true
            [[registry.mirror]]
            location = "mirror.example.com"
            pull-from-mirror = "digest-only"
        "#;
        assert_eq!(
            endpoints(conf, "127.0.0.1:5000/app:1"),
            [("127.0.0.1:5000/app:1".to_owned(), true)]
        );
        assert_eq!(
            endpoints(conf, "nginx"),
            [
                ("127.0.0.1:5001/hub/library/nginx:latest".to_owned(), true),
                ("docker.io/library/nginx:latest".to_owned(), false),
            ]
        );
        assert_eq!(
            endpoints(conf, &format!("nginx@sha256:{HEX}")),
            [
                (
                    format!("127.0.0.1:5001/hub/library/nginx@sha256:{HEX}"),
                    true
                ),
                (
                    format!("mirror.example.com/library/nginx@sha256:{HEX}"),
                    false
                ),
                (format!("docker.io/library/nginx@sha256:{HEX}"), false),
            ]
        );
        let parsed = RegistriesConf::parse(conf).expect("parse");
        assert_eq!(parsed.unqualified_search_registries, ["docker.io"]);
        assert!(parsed.is_insecure("127.0.0.1:5000"));
    }

    #[test]
    fn prefixes_rewrite_and_the_longest_wins() {
        let conf = r#"
            [[registry]]
            prefix = "example.com/team"
            location = "internal.example.com:5000/mirror/team"
            [[registry]]
            prefix = "example.com"
            location = "example.com"
            insecure = true
            [[registry]]
            prefix = "*.corp.example"
            insecure = true
        "#;
        assert_eq!(
            endpoints(conf, "example.com/team/app:2"),
            [(
                "internal.example.com:5000/mirror/team/app:2".to_owned(),
                false
            )]
        );
        assert_eq!(
            endpoints(conf, "example.com/other/app"),
            [("example.com/other/app:latest".to_owned(), true)]
        );
        assert_eq!(
            endpoints(conf, "example.com/teamwork/app"),
            [("example.com/teamwork/app:latest".to_owned(), true)]
        );
        assert_eq!(
            endpoints(conf, "registry.corp.example/app"),
            [("registry.corp.example/app:latest".to_owned(), true)]
        );
    }

    #[test]
    fn blocked_and_bad_files() {
        let conf = RegistriesConf::parse("[[registry]]\nlocation = \"bad.io\"\nblocked = true\n")
            .expect("parse");
        let err = conf
            .endpoints(&Reference::parse("bad.io/x").expect("reference"))
            .expect_err("blocked");
        assert!(matches!(err, PullError::Blocked { .. }), "{err}");
        assert!(matches!(
            RegistriesConf::parse("[[registry]]\ninsecure = true\n"),
            Err(PullError::RegistryEntry { .. })
        ));
        assert!(matches!(
            RegistriesConf::parse("registry = ["),
            Err(PullError::RegistriesConf { .. })
        ));
    }

    #[test]
    fn drop_ins_replace_by_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("registries.conf");
        std::fs::write(
            &main,
            "[[registry]]\nlocation = \"a.io\"\ninsecure = true\n",
        )
        .expect("write");
        let drop_ins = dir.path().join("registries.conf.d");
        std::fs::create_dir(&drop_ins).expect("mkdir");
        std::fs::write(
            drop_ins.join("10-a.conf"),
            "[[registry]]\nlocation = \"a.io\"\n",
        )
        .expect("write");
        std::fs::write(drop_ins.join("ignored.txt"), "not toml [").expect("write");
        let conf = RegistriesConf::load(&main, &[drop_ins]).expect("load");
        assert!(!conf.is_insecure("a.io"));
        let missing = RegistriesConf::load(&dir.path().join("missing.conf"), &[]).expect("load");
        assert_eq!(missing, RegistriesConf::default());
    }
}
