// SPDX-License-Identifier: Apache-2.0
//! Images built elsewhere, pulled by digest over the OCI distribution API
//! (`upstream = "registry/repository:tag"` in a recipe). `images pin`
//! turns the tag into a manifest digest per architecture; the build pulls
//! exactly those bytes (cached by digest, so an offline rebuild works once
//! they were fetched) and keeps them as they are: the image's digest in our
//! layout is the upstream one.

use std::path::PathBuf;

use anyhow::{Context, Result};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;

use super::layout::Pulled;
use super::recipe::{parse_upstream as parse, UpstreamPin, ARCHES};
use crate::blobs::cache_dir;
use crate::error::InputError;
use crate::io::{sha256_hex, write_atomic};
use crate::spec::Arch;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ACCEPT: [&str; 4] = [
    super::layout::MANIFEST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    DOCKER_LIST,
];

/// Loopback registries speak plain HTTP, as Docker assumes; every other
/// registry is reached over HTTPS with the system's roots.
fn client(r: &Reference) -> Client {
    let host = r.resolve_registry();
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let loopback = matches!(name, "127.0.0.1" | "localhost" | "[::1]");
    Client::new(ClientConfig {
        protocol: if loopback {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(120)),
        platform_resolver: None,
        ..Default::default()
    })
}

/// Credentials from Docker's `config.json` (`docker login`), else none.
fn auth(r: &Reference) -> RegistryAuth {
    use base64::Engine;
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
    let Some(dir) = dir else {
        return RegistryAuth::Anonymous;
    };
    let Ok(text) = std::fs::read(dir.join("config.json")) else {
        return RegistryAuth::Anonymous;
    };
    let Ok(cfg) = serde_json::from_slice::<Value>(&text) else {
        return RegistryAuth::Anonymous;
    };
    let entry = cfg["auths"][r.registry()]["auth"]
        .as_str()
        .or_else(|| cfg["auths"][format!("https://{}", r.registry())]["auth"].as_str());
    let decoded = entry
        .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
        .and_then(|b| String::from_utf8(b).ok());
    match decoded.as_deref().and_then(|s| s.split_once(':')) {
        Some((u, p)) => RegistryAuth::Basic(u.into(), p.into()),
        None => RegistryAuth::Anonymous,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // reqwest's rustls needs a process-wide provider; a second install is
    // refused, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP runtime")
}

/// What went wrong, as the user can act on it: exit 2 for an unreachable
/// registry, an unknown tag or digest and refused credentials.
fn explain(e: OciDistributionError, what: &str, file: &str, key: &str) -> anyhow::Error {
    let unknown = |detail: String| {
        InputError::new(
            file,
            key,
            format!("{what} does not exist ({detail})"),
            "check the repository and tag, then re-pin with `hc-image images pin NAME`",
        )
        .into()
    };
    match e {
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            InputError::new(
                file,
                key,
                format!("cannot reach the registry of {what}: {e}"),
                "check the address and that the registry runs; an offline build needs the image in \
                 the cache (~/.cache/hc-image/oci/upstream): build once while online",
            )
            .into()
        }
        OciDistributionError::ImageManifestNotFoundError(m) => unknown(m),
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) =>
        {
            unknown(format!("{envelope:?}"))
        }
        OciDistributionError::ServerError { code: 404, message, .. } => unknown(message),
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => InputError::new(
            file,
            key,
            format!("the registry refused access to {what}"),
            "log in with `docker login REGISTRY` (hc-image reads Docker's config.json)",
        )
        .into(),
        e => anyhow::Error::new(e).context(format!("pulling {what}")),
    }
}

fn media_type(doc: &Value, fallback: &str) -> String {
    doc["mediaType"].as_str().unwrap_or(fallback).to_string()
}

/// The manifest digest per architecture that `image` names now.
pub fn pin(image: &str, file: &str) -> Result<Vec<UpstreamPin>> {
    let r = parse(image, file)?;
    let rt = runtime()?;
    let c = client(&r);
    let a = auth(&r);
    let (bytes, digest) = rt
        .block_on(c.pull_manifest_raw(&r, &a, &ACCEPT))
        .map_err(|e| explain(e, image, file, "upstream"))?;
    let doc: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{image}: manifest"))?;
    let mut pins = Vec::new();
    if let Some(list) = doc["manifests"].as_array() {
        for arch in ARCHES {
            let hit = list.iter().find(|m| {
                m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch.debian()
            });
            if let Some(m) = hit {
                pins.push(UpstreamPin {
                    arch: arch.debian().into(),
                    digest: m["digest"].as_str().unwrap_or_default().into(),
                    size: m["size"].as_u64().unwrap_or(0),
                });
            }
        }
    } else {
        // One manifest: its config says which architecture it is for.
        let cfg = doc["config"]["digest"].as_str().unwrap_or_default();
        let mut out = Vec::new();
        rt.block_on(c.pull_blob(&r, cfg, &mut out))
            .map_err(|e| explain(e, image, file, "upstream"))?;
        let cfg: Value =
            serde_json::from_slice(&out).with_context(|| format!("{image}: config"))?;
        if let Some(arch) = ARCHES.iter().find(|a| cfg["architecture"] == a.debian()) {
            pins.push(UpstreamPin {
                arch: arch.debian().into(),
                digest,
                size: bytes.len() as u64,
            });
        }
    }
    if pins.is_empty() {
        return Err(InputError::new(
            file,
            "upstream",
            format!("{image} has no linux/amd64 or linux/arm64 image"),
            "pick an image published for the boards' architectures",
        )
        .into());
    }
    Ok(pins)
}

fn cached(digest: &str) -> PathBuf {
    cache_dir()
        .join("oci/upstream/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// One blob or manifest by digest: from the cache, else pulled; checked.
fn fetch(
    rt: &tokio::runtime::Runtime,
    c: &Client,
    r: &Reference,
    digest: &str,
    manifest: bool,
    (what, file, key): (&str, &str, &str),
) -> Result<Vec<u8>> {
    let want = digest.trim_start_matches("sha256:");
    let path = cached(digest);
    if let Ok(data) = std::fs::read(&path) {
        if sha256_hex(&data) == want {
            return Ok(data);
        }
    }
    tracing::info!("pulling {}@{digest}", r.whole());
    let data = if manifest {
        let by_digest = r.clone_with_digest(digest.to_string());
        rt.block_on(c.pull_manifest_raw(&by_digest, &auth(r), &ACCEPT))
            .map(|(b, _)| b.to_vec())
    } else {
        let mut out = Vec::new();
        rt.block_on(c.pull_blob(r, digest, &mut out)).map(|_| out)
    }
    .map_err(|e| explain(e, what, file, key))?;
    let got = sha256_hex(&data);
    if got != want {
        return Err(InputError::new(
            file,
            key,
            format!("{what}: the registry sent content with sha256 {got} for {digest}"),
            "the registry is not serving the pinned image: re-pin with `hc-image images pin NAME`",
        )
        .into());
    }
    let dir = path.parent().context("cache path")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&path, &data)?;
    Ok(data)
}

/// The pinned image of `arch`, every byte checked against its digest.
pub fn pull(image: &str, pin: &UpstreamPin, arch: Arch, file: &str, i: usize) -> Result<Pulled> {
    let r = parse(image, file)?;
    let rt = runtime()?;
    let c = client(&r);
    // Blob pulls use the stored credentials, and the manifest may come
    // from the cache.
    rt.block_on(c.store_auth_if_needed(r.resolve_registry(), &auth(&r)));
    let what = format!("{image}@{} ({})", pin.digest, arch.debian());
    let key = format!("upstream_pins[{i}].digest");
    let ctx = (what.as_str(), file, key.as_str());
    let manifest = fetch(&rt, &c, &r, &pin.digest, true, ctx)?;
    let doc: Value =
        serde_json::from_slice(&manifest).with_context(|| format!("{what}: manifest"))?;
    if doc.get("manifests").is_some() {
        return Err(InputError::new(
            file,
            key,
            format!("{what} is an index, not one architecture's manifest"),
            "re-pin with `hc-image images pin NAME`",
        )
        .into());
    }
    let cfg_digest = doc["config"]["digest"].as_str().unwrap_or_default();
    let config = fetch(&rt, &c, &r, cfg_digest, false, ctx)?;
    let mut layers = Vec::new();
    for l in doc["layers"].as_array().into_iter().flatten() {
        let d = l["digest"].as_str().unwrap_or_default().to_string();
        let data = fetch(&rt, &c, &r, &d, false, ctx)?;
        layers.push((d, media_type(l, super::layout::LAYER_GZIP), data));
    }
    Ok(Pulled {
        media_type: media_type(&doc, super::layout::MANIFEST),
        manifest,
        config,
        layers,
    })
}
