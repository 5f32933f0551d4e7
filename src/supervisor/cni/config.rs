//! The CNI network configuration, found and read as containerd's go-cni reads it with libcni:
//! the first file of the configuration directory in lexical order that ends in `.conflist`
//! (a network list), `.conf` or `.json` (one plugin, made a list of one). A malformed first
//! file is an error naming it and what is wrong, never a silent fall-through to the next.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Error;

/// The CNI versions podkit speaks (those of the spec up to 1.1.0; results are read from
/// 0.1.0's `ip4`/`ip6` and from every later `ips`).
const VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// A CNI network list: its name and version, and each plugin's configuration as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkList {
    /// The file it was read from, named in every error about it.
    pub file: PathBuf,
    pub name: String,
    pub cni_version: String,
    /// `disableCheck`: CHECK is skipped for this network.
    #[serde(default)]
    pub disable_check: bool,
    /// Each plugin's configuration object, as in the file (`type` checked).
    pub plugins: Vec<Value>,
}

impl NetworkList {
    /// The network of configuration directory `dir`: its first configuration file in lexical
    /// order.
    pub fn load(dir: &Path) -> Result<NetworkList, Error> {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                ) && p.is_file()
            })
            .collect();
        files.sort();
        let file = files.into_iter().next().ok_or_else(|| Error::NoConfig {
            dir: dir.to_path_buf(),
        })?;
        NetworkList::from_file(&file)
    }

    /// Reads one configuration file: a list if it ends in `.conflist`, else one plugin.
    pub fn from_file(file: &Path) -> Result<NetworkList, Error> {
        let bytes = std::fs::read(file).map_err(|source| Error::ReadConfig {
            file: file.to_path_buf(),
            source,
        })?;
        let bad = |what: String| Error::BadConfig {
            file: file.to_path_buf(),
            what,
        };
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Value::Object(object) = &value else {
            return Err(bad("not a JSON object".to_owned()));
        };
        let string = |key: &str| -> Result<String, Error> {
            match object.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(Value::String(_)) | None => Err(bad(format!("no `{key}`"))),
                Some(other) => Err(bad(format!("`{key}` is not a string: {other}"))),
            }
        };
        let name = string("name")?;
        if !valid_name(&name) {
            return Err(bad(format!(
                "network name {name:?} is not valid (letters, digits, '_', '.', '-', starting \
                 with a letter or digit)"
            )));
        }
        let cni_version = string("cniVersion")?;
        if !VERSIONS.contains(&cni_version.as_str()) {
            return Err(bad(format!(
                "cniVersion {cni_version:?} is not one podkit knows ({})",
                VERSIONS.join(", ")
            )));
        }
        let list = file.extension().and_then(|e| e.to_str()) == Some("conflist");
        let plugins = if list {
            match object.get("plugins") {
                Some(Value::Array(plugins)) if !plugins.is_empty() => plugins.clone(),
                Some(Value::Array(_)) => return Err(bad("`plugins` is empty".to_owned())),
                Some(_) => return Err(bad("`plugins` is not a list".to_owned())),
                None => return Err(bad("no `plugins` (a network list's plugins)".to_owned())),
            }
        } else {
            // A conflist saved as .conf has no `type` of its own (containerd says so too).
            if object.get("type").is_none() && object.contains_key("plugins") {
                return Err(bad(
                    "no `type`: a network list (with `plugins`) belongs in a .conflist file"
                        .to_owned(),
                ));
            }
            vec![value.clone()]
        };
        for (i, plugin) in plugins.iter().enumerate() {
            let kind = plugin["type"].as_str().unwrap_or_default();
            let where_ = if list {
                format!("plugins[{i}]")
            } else {
                "the plugin".to_owned()
            };
            if !plugin.is_object() {
                return Err(bad(format!("{where_} is not a JSON object")));
            }
            if kind.is_empty() {
                return Err(bad(format!("{where_} has no `type`")));
            }
            if kind.contains('/') || kind == "." || kind == ".." {
                return Err(bad(format!(
                    "{where_}: `type` {kind:?} must name a plugin binary, not a path"
                )));
            }
            if let Some(caps) = plugin.get("capabilities")
                && !caps.is_object()
            {
                return Err(bad(format!("{where_}: `capabilities` is not an object")));
            }
        }
        Ok(NetworkList {
            file: file.to_path_buf(),
            name,
            cni_version,
            disable_check: object
                .get("disableCheck")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            plugins,
        })
    }

    /// Whether a plugin of the list declares `capability` (`"capabilities": {"portMappings":
    /// true}`), so that its runtimeConfig carries it.
    pub fn has_capability(&self, capability: &str) -> bool {
        self.plugins
            .iter()
            .any(|p| p["capabilities"][capability].as_bool() == Some(true))
    }

    /// Whether this version has CHECK, and DEL gets the cached result (0.4.0 on).
    pub fn at_least_0_4(&self) -> bool {
        version_at_least(&self.cni_version, (0, 4, 0))
    }
}

/// libcni's network names: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn version_at_least(version: &str, least: (u32, u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let got = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    got >= least
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    const LIST: &str = r#"{"cniVersion": "1.0.0", "name": "net1", "plugins": [
        {"type": "bridge", "bridge": "cni0"},
        {"type": "portmap", "capabilities": {"portMappings": true}}]}"#;

    #[test]
    fn the_first_file_in_lexical_order_is_used() {
        let one = r#"{"cniVersion": "0.4.0", "name": "single", "type": "ptp"}"#;
        let dir = dir_with(&[
            ("20-b.conflist", LIST),
            ("10-a.conf", one),
            ("00-readme.txt", "not a config"),
        ]);
        let list = NetworkList::load(dir.path()).expect("load");
        assert_eq!(list.name, "single");
        assert_eq!(list.plugins.len(), 1);
        assert!(list.at_least_0_4());
        assert!(!list.has_capability("portMappings"));
        std::fs::remove_file(dir.path().join("10-a.conf")).expect("rm");
        let list = NetworkList::load(dir.path()).expect("load");
        assert_eq!((list.name.as_str(), list.plugins.len()), ("net1", 2));
        assert!(list.has_capability("portMappings"));
    }

    #[test]
    fn bad_files_are_named_with_what_is_wrong() {
        let cases = [
            ("{", "not JSON"),
            (r#"{"cniVersion": "1.0.0", "plugins": []}"#, "no `name`"),
            (
                r#"{"cniVersion": "1.0.0", "name": "n", "plugins": []}"#,
                "`plugins` is empty",
            ),
            (
                r#"{"cniVersion": "9.9.9", "name": "n", "plugins": [{"type": "x"}]}"#,
                "cniVersion \"9.9.9\"",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"bridge": "x"}]}"#,
                "plugins[0] has no `type`",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../x"}]}"#,
                "not a path",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "bad name", "plugins": [{"type": "x"}]}"#,
                "network name",
            ),
        ];
        for (text, want) in cases {
            let dir = dir_with(&[("10-x.conflist", text)]);
            let err = NetworkList::load(dir.path()).expect_err(text).to_string();
            assert!(
                err.contains("10-x.conflist") && err.contains(want),
                "{err} (wanted {want:?})"
            );
        }
        let dir = dir_with(&[("10-x.conf", LIST)]);
        let err = NetworkList::load(dir.path()).expect_err("list in .conf");
        assert!(err.to_string().contains(".conflist"), "{err}");
        let empty = dir_with(&[]);
        let err = NetworkList::load(empty.path()).expect_err("empty dir");
        assert!(err.to_string().contains("no CNI network"), "{err}");
    }

    #[test]
    fn versions_compare() {
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(version_at_least("0.4.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
    }
}
