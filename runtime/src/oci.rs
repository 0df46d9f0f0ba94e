//! OCI image config, manifest and index, with Docker's extensions that
//! BuildKit writes (`Healthcheck`, `OnBuild`, `Shell`, `ArgsEscaped`).
//!
//! Every map is a `BTreeMap` and optional fields are omitted when unset, so serialising the same
//! value always gives the same bytes (canonical JSON: every digest is of the bytes written once); documents are serialised once and
//! those bytes are what is hashed and stored.

use std::collections::BTreeMap;

use crate::digest::Digest;
use serde::{Deserialize, Serialize};

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The config of kiln's build cache artifact (`kiln build --cache-to`): an image config's
/// `rootfs` plus the cache's entries.
pub const MEDIA_KILN_CACHE_CONFIG: &str = "application/vnd.kiln.cache.config.v1+json";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A value Go may write as `null` (a nil slice or map: `"OnBuild": null` in every image docker
/// 20.10's BuildKit builds) read as its empty default, as Go reads it back.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An empty JSON object, written as `{}` (what Docker writes for port and volume sets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Docker's health check (`HEALTHCHECK`), durations in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        default,
        deserialize_with = "null_default"
    )]
    pub test: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interval: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start_period: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start_interval: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retries: Option<i64>,
}

/// The runtime configuration part of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub user: String,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        default,
        deserialize_with = "null_default"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        default,
        deserialize_with = "null_default"
    )]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        default,
        deserialize_with = "null_default"
    )]
    pub volumes: BTreeMap<String, Empty>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub working_dir: String,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        default,
        deserialize_with = "null_default"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub stop_signal: String,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub args_escaped: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub healthcheck: Option<Healthcheck>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        default,
        deserialize_with = "null_default"
    )]
    pub on_build: Vec<String>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        default,
        deserialize_with = "null_default"
    )]
    pub shell: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(deserialize_with = "null_default")]
    pub diff_ids: Vec<String>,
}

/// One `history` entry: one per instruction; `empty_layer` for those without a layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub empty_layer: bool,
}

/// The image config (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub config: ContainerConfig,
    pub rootfs: RootFs,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        default,
        deserialize_with = "null_default"
    )]
    pub history: Vec<History>,
    /// kiln's inline build cache (`kiln build --cache-to type=inline`): the steps that made
    /// this image, by cache key, so a build elsewhere can start from it (`--cache-from IMAGE`).
    #[serde(
        rename = "kiln.cache.v1",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub inline_cache: Option<serde_json::Value>,
}

impl ImageConfig {
    /// The platform the config names, as written (not normalized).
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
        }
    }
}

/// A content descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        default,
        deserialize_with = "null_default"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
}

impl Platform {
    /// Reads `os/arch[/variant]` as `--platform` and `FROM --platform` take it, normalized as
    /// containerd normalizes it: architecture aliases (`x86_64`, `aarch64`, `armhf`...) to
    /// OCI's names, `arm` without a variant is `arm/v7`, and the default variants (`amd64/v1`,
    /// `arm64/v8`) are dropped, so `linux/arm64/v8` and `linux/arm64` name one platform.
    pub fn parse(spec: &str) -> Result<Platform, String> {
        let spec = spec.trim();
        let parts: Vec<&str> = spec.split('/').collect();
        let bad = || {
            format!("invalid platform {spec:?}: expected os/arch[/variant], such as linux/arm64")
        };
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, v] if !v.is_empty() => (*os, *arch, Some(*v)),
            _ => return Err(bad()),
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !name_ok(os) || !name_ok(arch) || !variant.is_none_or(name_ok) {
            return Err(bad());
        }
        let os = os.to_ascii_lowercase();
        let variant = variant.map(str::to_ascii_lowercase);
        let (arch, variant) = match (arch.to_ascii_lowercase().as_str(), variant.as_deref()) {
            ("x86_64" | "x86-64" | "amd64", Some("v1") | None) => ("amd64", None),
            ("x86_64" | "x86-64" | "amd64", Some(v)) => ("amd64", Some(v.to_string())),
            ("aarch64" | "arm64", Some("8" | "v8" | "v8.0") | None) => ("arm64", None),
            ("aarch64" | "arm64", Some(v)) => ("arm64", Some(v.to_string())),
            ("armhf", _) => ("arm", Some("v7".to_string())),
            ("armel", _) => ("arm", Some("v6".to_string())),
            ("arm", None) => ("arm", Some("v7".to_string())),
            ("arm", Some(v)) => (
                "arm",
                Some(if v.starts_with('v') {
                    v.to_string()
                } else {
                    format!("v{v}")
                }),
            ),
            ("i386" | "i686" | "x86" | "386", _) => ("386", None),
            (a, v) => {
                return Ok(Platform {
                    architecture: a.to_string(),
                    os,
                    variant: v.map(str::to_string),
                });
            }
        };
        Ok(Platform {
            architecture: arch.to_string(),
            os,
            variant,
        })
    }

    /// This platform with containerd's normalization applied ([`Platform::parse`]'s rules),
    /// for one read from an image or index, which may spell it `arm64/v8`.
    pub fn normalized(&self) -> Platform {
        Platform::parse(&self.to_string()).unwrap_or_else(|_| self.clone())
    }

    /// Whether an image for `self` serves a request for `want`: same OS and architecture, and
    /// the same variant once both are normalized (`arm64/v8` is `arm64`; `arm` is `arm/v7`).
    pub fn matches(&self, want: &Platform) -> bool {
        let (a, b) = (self.normalized(), want.normalized());
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }

    /// Whether this is the machine's own platform: what runs without an emulator.
    pub fn is_host(&self) -> bool {
        self.matches(&host_platform())
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.variant {
            Some(v) => write!(f, "{}/{}/{v}", self.os, self.architecture),
            None => write!(f, "{}/{}", self.os, self.architecture),
        }
    }
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub media_type: String,
    pub config: Descriptor,
    #[serde(deserialize_with = "null_default")]
    pub layers: Vec<Descriptor>,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        default,
        deserialize_with = "null_default"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// An image index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub media_type: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub manifests: Vec<Descriptor>,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        default,
        deserialize_with = "null_default"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// A document serialised once: the bytes and their descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: Vec<u8>,
    pub descriptor: Descriptor,
}

/// Serialises `doc` (compact JSON, field order fixed by the types, maps sorted).
pub fn write_json<T: Serialize>(doc: &T, media_type: &str) -> Written {
    // Serialising these plain structs cannot fail: every key is a string and no value is a
    // non-finite float.
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    let digest = Digest::of(&bytes);
    Written {
        descriptor: Descriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        },
        bytes,
    }
}

/// ChainID: ChainID(L0) = DiffID(L0), ChainID(L0..Ln) = sha256(ChainID(..Ln-1)
/// + " " + DiffID(Ln)). The key of an unpacked stack of layers.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let mut it = diff_ids.iter();
    let mut chain = *it.next()?;
    for d in it {
        chain = Digest::of(format!("{chain} {d}").as_bytes());
    }
    Some(chain)
}

/// The host platform in OCI terms.
pub fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        architecture: architecture.to_string(),
        os: "linux".to_string(),
        variant: (architecture == "arm64").then(|| "v8".to_string()),
    }
}

/// Whether `spec` (`os/arch[/variant]`, as `--platform` takes it) names this machine's
/// platform; architecture aliases (`x86_64`, `aarch64`) are accepted.
pub fn is_host_platform(spec: &str) -> bool {
    Platform::parse(spec).is_ok_and(|p| p.is_host())
}

/// This machine's platform as `--platform` writes it.
pub fn host_platform_string() -> String {
    let h = host_platform();
    match h.variant {
        Some(v) => format!("{}/{}/{v}", h.os, h.architecture),
        None => format!("{}/{}", h.os, h.architecture),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_normalize_as_containerd() {
        let p = |s: &str| Platform::parse(s).unwrap().to_string();
        assert_eq!(p("linux/amd64"), "linux/amd64");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("linux/amd64/v1"), "linux/amd64");
        assert_eq!(p("linux/amd64/v3"), "linux/amd64/v3");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/arm/6"), "linux/arm/v6");
        assert_eq!(p("Linux/riscv64"), "linux/riscv64");
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/",
            "a/b/c/d",
            "linux/am d64",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
        let arm64v8 = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        };
        assert!(arm64v8.matches(&Platform::parse("linux/arm64").unwrap()));
        assert!(!arm64v8.matches(&Platform::parse("linux/arm/v7").unwrap()));
        assert!(Platform::parse(&host_platform_string()).unwrap().is_host());
    }

    #[test]
    fn go_nulls_read_as_empty() {
        // What docker 20.10's BuildKit writes for an image without ONBUILD, ENV and the rest.
        let cfg: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":null,
            "Entrypoint":null,"OnBuild":null,"Labels":null,"ExposedPorts":null,"Volumes":null,
            "Shell":null},"rootfs":{"type":"layers","diff_ids":null},"history":null}"#,
        )
        .unwrap();
        assert!(cfg.config.on_build.is_empty() && cfg.config.env.is_empty());
        assert!(cfg.config.cmd.is_none() && cfg.rootfs.diff_ids.is_empty());
        let cfg: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":null,"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(cfg.config, ContainerConfig::default());
        let m: Manifest = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"x","config":{"mediaType":"c","digest":"d",
            "size":1,"annotations":null},"layers":null,"annotations":null}"#,
        )
        .unwrap();
        assert!(m.layers.is_empty() && m.config.annotations.is_empty());
        let i: Index =
            serde_json::from_str(r#"{"schemaVersion":2,"manifests":null,"annotations":null}"#)
                .unwrap();
        assert!(i.manifests.is_empty());
        // A wrong type is still an error.
        assert!(serde_json::from_str::<Index>(r#"{"schemaVersion":2,"manifests":1}"#).is_err());
    }

    #[test]
    fn config_json_is_canonical_and_pinned() {
        let mut cfg = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![Digest::of(b"layer").to_string()],
            },
            ..Default::default()
        };
        cfg.config.labels.insert("z".into(), "1".into());
        cfg.config.labels.insert("a".into(), "2".into());
        cfg.config.exposed_ports.insert("80/tcp".into(), Empty {});
        cfg.config.cmd = Some(vec!["sh".into()]);
        let w = write_json(&cfg, MEDIA_CONFIG);
        let expected = format!(
            concat!(
                r#"{{"architecture":"amd64","os":"linux","config":{{"ExposedPorts":{{"80/tcp":{{}}}},"#,
                r#""Cmd":["sh"],"Labels":{{"a":"2","z":"1"}}}},"rootfs":{{"type":"layers","#,
                r#""diff_ids":["{}"]}}}}"#
            ),
            Digest::of(b"layer")
        );
        assert_eq!(String::from_utf8(w.bytes.clone()).unwrap(), expected);
        // Round trip, and the same value always serialises to the same bytes.
        let back: ImageConfig = serde_json::from_slice(&w.bytes).unwrap();
        assert_eq!(write_json(&back, MEDIA_CONFIG), w);
    }

    #[test]
    fn chain_ids() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a));
        assert_eq!(
            chain_id(&[a, b]),
            Some(Digest::of(format!("{a} {b}").as_bytes()))
        );
    }
}
