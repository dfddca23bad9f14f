// SPDX-License-Identifier: Apache-2.0
//! Seeds a registry store (CNCF distribution's filesystem driver, which
//! Debian's docker-registry uses) from an OCI image layout, without a push:
//! blobs go to `docker/registry/v2/blobs/sha256/XX/HEX/data`, and each
//! repository gets the links the registry resolves names and digests by
//! (`_layers`, `_manifests/revisions`, `_manifests/tags`).
//!
//! Resumable after a power cut: a blob is copied to a temporary file,
//! hashed while copied, synced and renamed only when its digest matches;
//! links are written last and are idempotent. A blob already in the store
//! is kept when its size matches (the registry checks digests on read).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::exec::Result;
use crate::host::files::{write_atomic, PUBLIC};

/// What a seeding did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seeded {
    /// `name@sha256:...` of each image, in index order.
    pub images: Vec<String>,
    pub blobs_copied: usize,
    pub blobs_present: usize,
    pub bytes_copied: u64,
}

fn v2(store: &Path) -> PathBuf {
    store.join("docker/registry/v2")
}

fn hex_of(digest: &str) -> Result<&str> {
    let h = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("{digest}: not a sha256 digest"))?;
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{digest}: not a sha256 digest"));
    }
    Ok(h)
}

fn read_json(p: &Path) -> Result<Value> {
    let b = std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
    serde_json::from_slice(&b).map_err(|e| format!("parsing {}: {e}", p.display()))
}

/// Copies one blob into the store, checking its digest on the way.
fn put_blob(layout: &Path, store: &Path, digest: &str, out: &mut Seeded) -> Result<()> {
    let hex = hex_of(digest)?;
    let src = layout.join("blobs/sha256").join(hex);
    let dir = v2(store).join("blobs/sha256").join(&hex[..2]).join(hex);
    let dest = dir.join("data");
    let want = std::fs::metadata(&src)
        .map_err(|e| {
            format!(
                "{}: {e} (the image's OCI content is incomplete)",
                src.display()
            )
        })?
        .len();
    if std::fs::metadata(&dest).is_ok_and(|m| m.len() == want) {
        out.blobs_present += 1;
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = dir.join(".data.hc-tmp");
    let copied = (|| -> std::io::Result<String> {
        let mut from = File::open(&src)?;
        let mut to = File::create(&tmp)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            to.write_all(&buf[..n])?;
        }
        to.sync_all()?;
        Ok(hex::encode(h.finalize()))
    })()
    .map_err(|e| format!("copying {}: {e}", src.display()))?;
    if copied != hex {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "{} has sha256 {copied}, not {hex}: the image's OCI content is damaged (reflash the card)",
            src.display()
        ));
    }
    std::fs::rename(&tmp, &dest).map_err(|e| format!("renaming to {}: {e}", dest.display()))?;
    out.blobs_copied += 1;
    out.bytes_copied += want;
    // A power cut halfway: some blobs in, no links yet.
    if out.blobs_copied == 2 {
        crate::engine::failpoint::failpoint("registry:during-seed");
    }
    Ok(())
}

fn link(path: &Path, digest: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|s| s == digest) {
        return Ok(());
    }
    write_atomic(path, digest.as_bytes(), PUBLIC)
}

/// `homecloud/restic:0.18` -> (`homecloud/restic`, `0.18`).
fn split_ref(r: &str) -> Result<(&str, &str)> {
    let (name, tag) = r
        .rsplit_once(':')
        .filter(|(n, _)| !n.is_empty() && !n.contains(':'))
        .ok_or_else(|| format!("{r}: not NAME:TAG"))?;
    let ok = name.split('/').all(|c| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    });
    if !ok || tag.is_empty() {
        return Err(format!("{r}: not a repository name and tag"));
    }
    Ok((name, tag))
}

/// Seeds `store` with every image of the OCI layout at `layout`.
pub fn seed(layout: &Path, store: &Path) -> Result<Seeded> {
    let index = read_json(&layout.join("index.json"))?;
    let mut out = Seeded::default();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let digest = m["digest"]
            .as_str()
            .ok_or("index.json: a manifest without a digest")?;
        let reference = m["annotations"]["io.containerd.image.name"]
            .as_str()
            .ok_or_else(|| format!("index.json: {digest} has no image name"))?;
        let (name, tag) = split_ref(reference)?;
        let manifest = read_json(&layout.join("blobs/sha256").join(hex_of(digest)?))?;
        let mut parts = vec![manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| format!("{digest}: no config"))?
            .to_string()];
        for l in manifest["layers"].as_array().into_iter().flatten() {
            parts.push(
                l["digest"]
                    .as_str()
                    .ok_or_else(|| format!("{digest}: a layer without a digest"))?
                    .to_string(),
            );
        }
        let repo = v2(store).join("repositories").join(name);
        for p in &parts {
            put_blob(layout, store, p, &mut out)?;
            link(
                &repo.join("_layers/sha256").join(hex_of(p)?).join("link"),
                p,
            )?;
        }
        // The manifest last: a name resolves only once all it needs is there.
        put_blob(layout, store, digest, &mut out)?;
        let h = hex_of(digest)?;
        link(
            &repo
                .join("_manifests/revisions/sha256")
                .join(h)
                .join("link"),
            digest,
        )?;
        let tags = repo.join("_manifests/tags").join(tag);
        link(&tags.join("index/sha256").join(h).join("link"), digest)?;
        link(&tags.join("current/link"), digest)?;
        out.images.push(format!("{name}@{digest}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    /// A one-image layout with a config and one layer (test data, not a
    /// real image: the registry is exercised in tests/images.rs).
    fn layout(dir: &Path) -> (String, String) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("mkdir");
        let cfg = b"{}".to_vec();
        let layer = b"layer bytes".to_vec();
        for b in [&cfg, &layer] {
            std::fs::write(blobs.join(sha(b)), b).expect("blob");
        }
        let man = serde_json::json!({"schemaVersion": 2, "config": {"digest": format!("sha256:{}", sha(&cfg))},
            "layers": [{"digest": format!("sha256:{}", sha(&layer))}]});
        let mb = serde_json::to_vec(&man).expect("json");
        std::fs::write(blobs.join(sha(&mb)), &mb).expect("manifest");
        let idx = serde_json::json!({"manifests": [{"digest": format!("sha256:{}", sha(&mb)),
            "annotations": {"io.containerd.image.name": "homecloud/t:1.0"}}]});
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&idx).expect("json"),
        )
        .expect("index");
        (sha(&mb), sha(&layer))
    }

    #[test]
    fn seeds_blobs_and_links_and_is_idempotent() {
        let d = tempfile::tempdir().expect("tempdir");
        let (lay, store) = (d.path().join("oci"), d.path().join("store"));
        let (m, l) = layout(&lay);
        let s = seed(&lay, &store).expect("seed");
        assert_eq!(s.images, vec![format!("homecloud/t@sha256:{m}")]);
        assert_eq!((s.blobs_copied, s.blobs_present), (3, 0));
        let v2 = store.join("docker/registry/v2");
        assert_eq!(
            std::fs::read(v2.join(format!("blobs/sha256/{}/{l}/data", &l[..2]))).expect("data"),
            b"layer bytes"
        );
        let repo = v2.join("repositories/homecloud/t");
        let cur =
            std::fs::read_to_string(repo.join("_manifests/tags/1.0/current/link")).expect("tag");
        assert_eq!(cur, format!("sha256:{m}"));
        assert!(repo.join(format!("_layers/sha256/{l}/link")).is_file());
        assert!(repo
            .join(format!("_manifests/revisions/sha256/{m}/link"))
            .is_file());
        let again = seed(&lay, &store).expect("again");
        assert_eq!((again.blobs_copied, again.blobs_present), (0, 3));
    }

    #[test]
    fn a_torn_blob_is_replaced_and_a_damaged_source_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let (lay, store) = (d.path().join("oci"), d.path().join("store"));
        let (_, l) = layout(&lay);
        // A power cut mid-copy left a short file and a temp file.
        let dir = store.join(format!("docker/registry/v2/blobs/sha256/{}/{l}", &l[..2]));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("data"), b"lay").expect("torn");
        std::fs::write(dir.join(".data.hc-tmp"), b"x").expect("tmp");
        seed(&lay, &store).expect("seed");
        assert_eq!(
            std::fs::read(dir.join("data")).expect("data"),
            b"layer bytes"
        );
        // A source blob whose bytes do not match its name.
        std::fs::write(lay.join("blobs/sha256").join(&l), b"LAYER BYTES").expect("damage");
        std::fs::remove_dir_all(&store).expect("rm");
        let e = seed(&lay, &store).expect_err("damaged");
        assert!(e.contains("damaged"), "{e}");
        assert!(
            !dir.join("data").exists(),
            "nothing half written under the name"
        );
    }

    #[test]
    fn references_are_checked() {
        assert_eq!(
            split_ref("homecloud/a:1.0").expect("ok"),
            ("homecloud/a", "1.0")
        );
        assert!(split_ref("Homecloud/a:1").is_err());
        assert!(split_ref("nameonly").is_err());
        assert!(split_ref("a//b:1").is_err());
    }
}
