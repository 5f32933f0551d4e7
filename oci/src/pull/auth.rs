//! Registry credentials from the files users already have, looked up as podman looks them up
//! (containers/image `pkg/docker/config`): `$REGISTRY_AUTH_FILE` alone when set; else
//! `${XDG_RUNTIME_DIR}/containers/auth.json` (`/run/containers/<uid>/auth.json` without
//! `XDG_RUNTIME_DIR`), `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`, then
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. The first file with an entry for the
//! image wins. Credential helpers (`credHelpers`, `credsStore`) are not run.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::PullError;
use crate::reference::Reference;

/// A user name and password (or token) for a registry's basic auth or token service.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where the credentials of a pull came from, for its error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// None found: the pull was anonymous.
    Anonymous,
    /// Given by the caller (an imagePullSecret).
    Explicit,
    /// Read from this file.
    File(PathBuf),
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Anonymous => f.write_str("anonymous access (no credentials found)"),
            CredentialSource::Explicit => f.write_str("the credentials given (imagePullSecrets)"),
            CredentialSource::File(path) => write!(f, "the credentials in {}", path.display()),
        }
    }
}

/// The auth files to search, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthFiles {
    paths: Vec<PathBuf>,
}

#[derive(Debug, serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Debug, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
}

impl AuthFiles {
    /// Exactly these files, in this order.
    pub fn new(paths: Vec<PathBuf>) -> AuthFiles {
        AuthFiles { paths }
    }

    /// podman's files, from the environment.
    pub fn from_env() -> AuthFiles {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(file) = var("REGISTRY_AUTH_FILE") {
            return AuthFiles { paths: vec![file] };
        }
        let home = var("HOME").unwrap_or_else(|| PathBuf::from("/root"));
        let mut paths = Vec::new();
        match var("XDG_RUNTIME_DIR") {
            Some(runtime) => paths.push(runtime.join("containers/auth.json")),
            None => paths.push(PathBuf::from(format!(
                "/run/containers/{}/auth.json",
                nix::unistd::getuid()
            ))),
        }
        let config_home = var("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config"));
        paths.push(config_home.join("containers/auth.json"));
        match var("DOCKER_CONFIG") {
            Some(dir) => paths.push(dir.join("config.json")),
            None => paths.push(home.join(".docker/config.json")),
        }
        AuthFiles { paths }
    }

    /// The files searched.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The first credentials for `reference` (missing files are skipped; a file that cannot be
    /// parsed is an error, as for podman).
    pub fn find(&self, reference: &Reference) -> Result<Option<(Credentials, PathBuf)>, PullError> {
        for path in &self.paths {
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(PullError::AuthFileRead {
                        path: path.clone(),
                        source,
                    });
                }
            };
            if let Some(credentials) = lookup(&bytes, reference, path)? {
                return Ok(Some((credentials, path.clone())));
            }
        }
        Ok(None)
    }
}

/// The credentials for `reference` in a docker config JSON (`{"auths": {...}}`): an auth.json,
/// a `~/.docker/config.json`, or the `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson`
/// Secret.
pub fn credentials_from_docker_config(
    json: &[u8],
    reference: &Reference,
) -> Result<Option<Credentials>, PullError> {
    lookup(json, reference, Path::new("<docker config>"))
}

fn lookup(
    bytes: &[u8],
    reference: &Reference,
    path: &Path,
) -> Result<Option<Credentials>, PullError> {
    let file: AuthFile = serde_json::from_slice(bytes).map_err(|source| PullError::AuthFile {
        path: path.to_owned(),
        source,
    })?;
    // Most specific first: `host/ns/repo`, `host/ns`, `host` (podman's namespaced keys).
    let mut key = reference.name();
    loop {
        if let Some(entry) = file.auths.get(&key) {
            return decode(entry, path);
        }
        match key.rfind('/') {
            Some(i) => key.truncate(i),
            None => break,
        }
    }
    // Then keys written as URLs (`https://index.docker.io/v1/`, as `docker login` writes them).
    let registry = normalize_registry(reference.registry());
    for (key, entry) in &file.auths {
        let stripped = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"));
        let host = match stripped {
            Some(rest) => rest.split('/').next().unwrap_or(rest),
            None => key.as_str(),
        };
        if normalize_registry(host) == registry {
            return decode(entry, path);
        }
    }
    Ok(None)
}

fn normalize_registry(registry: &str) -> &str {
    match registry {
        "docker.io" | "registry-1.docker.io" => "index.docker.io",
        other => other,
    }
}

fn decode(entry: &AuthEntry, path: &Path) -> Result<Option<Credentials>, PullError> {
    if entry.auth.is_empty() {
        return Ok(None); // a credential helper's placeholder
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.trim())
        .map_err(|_| PullError::AuthEntry {
            path: path.to_owned(),
        })?;
    let text = String::from_utf8(decoded).map_err(|_| PullError::AuthEntry {
        path: path.to_owned(),
    })?;
    let Some((username, password)) = text.split_once(':') else {
        return Err(PullError::AuthEntry {
            path: path.to_owned(),
        });
    };
    Ok(Some(Credentials {
        username: username.to_owned(),
        password: password.trim_matches('\0').to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(user: &str, password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    }

    fn find(json: &str, image: &str) -> Option<String> {
        let reference = Reference::parse(image).expect("reference");
        credentials_from_docker_config(json.as_bytes(), &reference)
            .expect("lookup")
            .map(|c| c.username)
    }

    #[test]
    fn most_specific_key_wins() {
        let json = format!(
            r#"{{"auths": {{"quay.io": {{"auth": "{}"}}, "quay.io/team": {{"auth": "{}"}}}}}}"#,
            auth("host", "p"),
            auth("team", "p")
        );
        assert_eq!(find(&json, "quay.io/team/app").as_deref(), Some("team"));
        assert_eq!(find(&json, "quay.io/other/app").as_deref(), Some("host"));
        assert_eq!(find(&json, "ghcr.io/team/app"), None);
    }

    #[test]
    fn docker_hub_keys() {
        let docker = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}}}}}}"#,
            auth("d", "p")
        );
        assert_eq!(find(&docker, "nginx").as_deref(), Some("d"));
        let podman = format!(
            r#"{{"auths": {{"docker.io": {{"auth": "{}"}}}}}}"#,
            auth("p", "p")
        );
        assert_eq!(find(&podman, "user/app").as_deref(), Some("p"));
    }

    #[test]
    fn password_may_hold_colons() {
        let json = format!(
            r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#,
            auth("u", "a:b:c")
        );
        let reference = Reference::parse("r.io/x").expect("reference");
        let found = credentials_from_docker_config(json.as_bytes(), &reference)
            .expect("ok")
            .expect("found");
        assert_eq!(found.password, "a:b:c");
        assert!(
            !format!("{found:?}").contains("a:b:c"),
            "Debug redacts the password"
        );
    }

    #[test]
    fn bad_entries_are_errors() {
        let reference = Reference::parse("r.io/x").expect("reference");
        let json = r#"{"auths": {"r.io": {"auth": "bm8tY29sb24="}}}"#; // "no-colon"
        assert!(matches!(
            credentials_from_docker_config(json.as_bytes(), &reference),
            Err(PullError::AuthEntry { .. })
        ));
        assert!(matches!(
            credentials_from_docker_config(b"{", &reference),
            Err(PullError::AuthFile { .. })
        ));
        // A credential helper's empty placeholder is no credential.
        let json = r#"{"auths": {"r.io": {}}}"#;
        assert_eq!(
            credentials_from_docker_config(json.as_bytes(), &reference).expect("ok"),
            None
        );
    }

    #[test]
    fn files_are_searched_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = dir.path().join("first.json");
        let second = dir.path().join("second.json");
        std::fs::write(
            &second,
            format!(
                r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#,
                auth("second", "p")
            ),
        )
        .expect("write");
        let files = AuthFiles::new(vec![
            dir.path().join("missing.json"),
            first.clone(),
            second.clone(),
        ]);
        let reference = Reference::parse("r.io/x").expect("reference");
        std::fs::write(&first, r#"{"auths": {}}"#).expect("write");
        let (found, path) = files.find(&reference).expect("find").expect("found");
        assert_eq!((found.username.as_str(), path), ("second", second));
        std::fs::write(
            &first,
            format!(
                r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#,
                auth("first", "p")
            ),
        )
        .expect("write");
        let (found, path) = files.find(&reference).expect("find").expect("found");
        assert_eq!((found.username.as_str(), path), ("first", first));
    }
}
