// SPDX-License-Identifier: Apache-2.0
//! OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/`)
//! plus Docker's `manifest.json`, so one directory is read by registries,
//! skopeo and `docker load` alike. Each blob is written once.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::layer::{sha256, Layer};
use crate::spec::Arch;

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// An image as pulled: its manifest bytes verbatim and every blob it names.
pub struct Pulled {
    pub manifest: Vec<u8>,
    pub media_type: String,
    pub config: Vec<u8>,
    /// (digest "sha256:...", media type, bytes), in manifest order.
    pub layers: Vec<(String, String, Vec<u8>)>,
}

/// A layout being written.
pub struct Layout {
    pub dir: PathBuf,
    index: Vec<Value>,
    docker: Vec<Value>,
}

/// What one image came to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    pub manifest: String,
    pub config: String,
    pub manifest_size: usize,
}

/// RFC 3339 of seconds since the epoch.
pub(crate) fn rfc3339(secs: u64) -> String {
    crate::io::utc_rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

impl Layout {
    pub fn create(dir: &Path) -> Result<Layout> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Layout {
            dir: dir.to_path_buf(),
            index: Vec::new(),
            docker: Vec::new(),
        })
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest)
    }

    /// Writes `data` under its digest unless it is there already.
    pub fn put(&self, data: &[u8]) -> Result<String> {
        let d = sha256(data);
        let p = self.blob_path(&d);
        if !p.exists() {
            crate::io::write_atomic(&p, data)?;
        }
        Ok(d)
    }

    /// Adds an image: its config and manifest, named `reference`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_image(
        &mut self,
        reference: &str,
        arch: Arch,
        layers: &[(&Layer, String)],
        config: &Value,
        created: u64,
    ) -> Result<Written> {
        let mut cfg = config.clone();
        cfg["architecture"] = json!(arch.debian());
        if arch == Arch::Arm64 {
            cfg["variant"] = json!("v8");
        }
        cfg["os"] = json!("linux");
        cfg["created"] = json!(rfc3339(created));
        cfg["rootfs"] = json!({
            "type": "layers",
            "diff_ids": layers.iter().map(|(l, _)| format!("sha256:{}", l.diff_id)).collect::<Vec<_>>(),
        });
        cfg["history"] = Value::Array(
            layers
                .iter()
                .map(|(_, what)| json!({"created": rfc3339(created), "created_by": what}))
                .collect(),
        );
        let cfg_bytes = serde_json::to_vec(&cfg)?;
        let cfg_digest = self.put(&cfg_bytes)?;
        for (l, _) in layers {
            if !self.blob_path(&l.digest).exists() {
                crate::io::write_atomic(&self.blob_path(&l.digest), &l.blob)?;
            }
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": format!("sha256:{cfg_digest}"), "size": cfg_bytes.len()},
            "layers": layers.iter().map(|(l, _)| json!({
                "mediaType": LAYER_GZIP,
                "digest": format!("sha256:{}", l.digest),
                "size": l.blob.len(),
            })).collect::<Vec<_>>(),
        });
        let m_bytes = serde_json::to_vec(&manifest)?;
        let m_digest = self.put(&m_bytes)?;
        let layer_digests: Vec<String> = layers.iter().map(|(l, _)| l.digest.clone()).collect();
        self.name(
            reference,
            arch,
            MANIFEST,
            &m_digest,
            m_bytes.len(),
            &cfg_digest,
            &layer_digests,
        );
        Ok(Written {
            manifest: format!("sha256:{m_digest}"),
            config: format!("sha256:{cfg_digest}"),
            manifest_size: m_bytes.len(),
        })
    }

    /// Adds an image pulled from elsewhere, its manifest kept byte for byte
    /// so its digest stays the upstream one.
    pub fn add_pulled(&mut self, reference: &str, arch: Arch, p: &Pulled) -> Result<Written> {
        let cfg_digest = self.put(&p.config)?;
        let mut layer_digests = Vec::new();
        for (_, _, data) in &p.layers {
            layer_digests.push(self.put(data)?);
        }
        let m_digest = self.put(&p.manifest)?;
        self.name(
            reference,
            arch,
            &p.media_type,
            &m_digest,
            p.manifest.len(),
            &cfg_digest,
            &layer_digests,
        );
        Ok(Written {
            manifest: format!("sha256:{m_digest}"),
            config: format!("sha256:{cfg_digest}"),
            manifest_size: p.manifest.len(),
        })
    }

    /// The image's entries in `index.json` and Docker's `manifest.json`.
    #[allow(clippy::too_many_arguments)]
    fn name(
        &mut self,
        reference: &str,
        arch: Arch,
        media_type: &str,
        m_digest: &str,
        m_size: usize,
        cfg_digest: &str,
        layers: &[String],
    ) {
        let mut platform = json!({"architecture": arch.debian(), "os": "linux"});
        if arch == Arch::Arm64 {
            platform["variant"] = json!("v8");
        }
        let tag = reference.rsplit_once(':').map_or("latest", |(_, t)| t);
        self.index.push(json!({
            "mediaType": media_type,
            "digest": format!("sha256:{m_digest}"),
            "size": m_size,
            "platform": platform,
            "annotations": {
                "io.containerd.image.name": reference,
                "org.opencontainers.image.ref.name": tag,
            },
        }));
        self.docker.push(json!({
            "Config": format!("blobs/sha256/{cfg_digest}"),
            "RepoTags": [reference],
            "Layers": layers.iter().map(|d| format!("blobs/sha256/{d}")).collect::<Vec<_>>(),
        }));
    }

    /// Writes `index.json`, `manifest.json` and `oci-layout` last: a layout
    /// without them is unfinished.
    pub fn finish(self) -> Result<()> {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": self.index,
        });
        crate::io::write_atomic(
            &self.dir.join("index.json"),
            &serde_json::to_vec_pretty(&index)?,
        )?;
        crate::io::write_atomic(
            &self.dir.join("manifest.json"),
            &serde_json::to_vec_pretty(&Value::Array(self.docker))?,
        )?;
        crate::io::write_atomic(
            &self.dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3_723), "2000-02-29T01:02:03Z");
    }
}
