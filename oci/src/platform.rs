//! The platform an image must be for, in the names Go (and so every image index) uses.

use std::fmt;

use oci_spec::image::Descriptor;

/// An OS, architecture and optional variant, as in an image index (`linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// GOARCH: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`, ...
    pub architecture: String,
    /// `v7` for 32-bit arm, else none.
    pub variant: Option<String>,
}

impl Platform {
    /// This host: linux and the GOARCH name of the architecture podkit was built for.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    /// `linux/amd64`-style text.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    /// The manifest of an index for this platform: the first of this OS and architecture whose
    /// variant is this one's, else the first with no variant or, when this platform names none,
    /// any (`arm64` takes `arm64/v8`).
    pub(crate) fn choose<'a>(&self, manifests: &'a [Descriptor]) -> Option<&'a Descriptor> {
        let candidates: Vec<&Descriptor> = manifests
            .iter()
            .filter(|d| {
                d.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == self.os
                        && p.architecture().to_string() == self.architecture
                })
            })
            .collect();
        let variant_of = |d: &Descriptor| d.platform().as_ref().and_then(|p| p.variant().clone());
        candidates
            .iter()
            .find(|d| variant_of(d) == self.variant)
            .or_else(|| {
                candidates
                    .iter()
                    .find(|d| variant_of(d).is_none() || self.variant.is_none())
            })
            .copied()
    }

    /// The platforms of an index, for an error message.
    pub(crate) fn list(manifests: &[Descriptor]) -> String {
        let names: Vec<String> = manifests
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| {
                let platform = Platform::new(
                    &p.os().to_string(),
                    &p.architecture().to_string(),
                    p.variant().as_deref(),
                );
                platform.to_string()
            })
            .collect();
        if names.is_empty() {
            "no platforms".to_owned()
        } else {
            names.join(", ")
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str, Option<&str>)]) -> Vec<Descriptor> {
        let json: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                let mut platform = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = (*v).into();
                }
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{:064x}", i),
                    "size": 1,
                    "platform": platform,
                })
            })
            .collect();
        serde_json::from_value(serde_json::Value::Array(json)).expect("descriptors")
    }

    fn chosen(platform: Platform, manifests: &[Descriptor]) -> Option<String> {
        platform.choose(manifests).map(|d| d.digest().to_string())
    }

    #[test]
    fn host_is_go_named() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.to_string(), "linux/amd64");
        }
    }

    #[test]
    fn chooses_os_arch_and_variant() {
        let manifests = index(&[
            ("linux", "amd64", None),
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
            ("linux", "arm64", Some("v8")),
            ("windows", "amd64", None),
        ]);
        let digest = |i: usize| Some(format!("sha256:{i:064x}"));
        assert_eq!(
            chosen(Platform::new("linux", "amd64", None), &manifests),
            digest(0)
        );
        assert_eq!(
            chosen(Platform::new("linux", "arm", Some("v7")), &manifests),
            digest(2)
        );
        assert_eq!(
            chosen(Platform::new("linux", "arm64", None), &manifests),
            digest(3)
        );
        assert_eq!(
            chosen(Platform::new("windows", "amd64", None), &manifests),
            digest(4)
        );
        assert_eq!(
            chosen(Platform::new("linux", "s390x", None), &manifests),
            None
        );
        assert_eq!(
            Platform::list(&manifests),
            "linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8, windows/amd64"
        );
    }
}
