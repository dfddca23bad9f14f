// SPDX-License-Identifier: Apache-2.0
//! The `registry` step: seeds this node's registry store from the OCI
//! layout the image carries, loads the registry's own image into dockerd
//! from the same layout and runs it on 127.0.0.1:5000. Every node has the
//! same images, so a task moved to any node pulls its image by digest from
//! that node's own registry, with no route to anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::seed::seed;
use crate::engine::failpoint::failpoint;
use crate::engine::{Ctx, Enabled, Observed, Result, Step};
use crate::host::files::{write_atomic, PUBLIC};

/// The layout written by the builder (`containers` of the image profile).
pub const LAYOUT: &str = "/usr/share/hc-image/images/oci";
/// The registry's store on this node's disk.
pub const STORE: &str = "/var/lib/hc-registry";
/// Written after a complete seeding: the sha256 of the layout's index.
const SEEDED: &str = "/var/lib/hc-registry/.hc-seeded";
const CONFIG: &str = "/etc/hc-image/registry/config.yml";
pub const ADDR: &str = "127.0.0.1:5000";
const CONTAINER: &str = "hc-registry";
const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);

/// Distribution's configuration: the seeded store, loopback only, no
/// auth (only this node's dockerd reaches it), no deletes.
pub fn config_yml() -> String {
    format!(
        "# Written by hc-firstboot: this node's registry, seeded from the image.\n\
         version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\n  \
         delete:\n    enabled: false\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {ADDR}\n  headers:\n    X-Content-Type-Options: [nosniff]\n"
    )
}

/// The layout's index and the sha256 of its bytes (what `.hc-seeded` holds).
fn layout_index(cx: &Ctx) -> Result<(Value, String)> {
    let p = cx.path(LAYOUT).join("index.json");
    let b = std::fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
    let v = serde_json::from_slice(&b).map_err(|e| format!("parsing {}: {e}", p.display()))?;
    Ok((v, hex::encode(Sha256::digest(&b))))
}

/// The registry's image reference, as the layout names it.
pub fn registry_ref(index: &Value) -> Result<String> {
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["annotations"]["io.containerd.image.name"].as_str())
        .find(|r| r.starts_with("homecloud/registry:"))
        .map(str::to_string)
        .ok_or_else(|| "the image's layout has no homecloud/registry image".to_string())
}

/// `tar ... | docker load` of one image of the layout: Docker's
/// `manifest.json` for that image only (written to `work`), and its blobs.
pub fn load_script(
    docker_manifest: &Value,
    reference: &str,
    layout: &Path,
    work: &Path,
) -> Result<(String, Value)> {
    let entry = docker_manifest
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| {
            e["RepoTags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == reference))
        })
        .ok_or_else(|| format!("{reference} is not in the layout's manifest.json"))?;
    let mut blobs = vec![entry["Config"].as_str().unwrap_or_default().to_string()];
    for l in entry["Layers"].as_array().into_iter().flatten() {
        blobs.push(l.as_str().unwrap_or_default().to_string());
    }
    let safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    };
    if !blobs
        .iter()
        .all(|b| safe(b) && b.starts_with("blobs/sha256/"))
        || !safe(&layout.to_string_lossy())
        || !safe(&work.to_string_lossy())
    {
        return Err(format!(
            "unexpected paths in the layout's manifest.json for {reference}"
        ));
    }
    let script = format!(
        "tar -c -C {} manifest.json -C {} {} | docker load",
        work.display(),
        layout.display(),
        blobs.join(" ")
    );
    Ok((script, Value::Array(vec![entry.clone()])))
}

/// Whether the registry answers its API's base endpoint.
fn answers() -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &ADDR.parse().expect("a socket address"),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

fn read_json(p: &Path) -> Result<Value> {
    let b = std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
    serde_json::from_slice(&b).map_err(|e| format!("parsing {}: {e}", p.display()))
}

/// The container's state: running, and on which image.
fn container(cx: &Ctx) -> Option<(bool, String)> {
    let v: Value = serde_json::from_str(
        &cx.runner
            .engine_get(&format!("/containers/{CONTAINER}/json"), ENGINE_TIMEOUT)
            .ok()?,
    )
    .ok()?;
    Some((
        v["State"]["Running"].as_bool().unwrap_or(false),
        v["Config"]["Image"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}

pub struct Registry;

impl Step for Registry {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn enabled(&self, cx: &Ctx) -> Enabled {
        if cx.path(LAYOUT).join("index.json").is_file() {
            Enabled::On
        } else {
            Enabled::Off("the image carries no service images")
        }
    }

    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        let (index, digest) = layout_index(cx)?;
        let reference = registry_ref(&index)?;
        let seeded = std::fs::read_to_string(cx.path(SEEDED)).unwrap_or_default();
        if seeded.trim() != digest {
            return Ok(Observed::Pending);
        }
        match container(cx) {
            Some((true, image)) if image == reference && answers() => {}
            _ => return Ok(Observed::Pending),
        }
        let n = index["manifests"].as_array().map_or(0, Vec::len);
        Ok(Observed::Done(BTreeMap::from([
            ("address".into(), ADDR.into()),
            ("images".into(), n.to_string()),
        ])))
    }

    fn apply(&self, cx: &Ctx) -> Result<()> {
        let layout = cx.path(LAYOUT);
        let (index, want) = layout_index(cx)?;
        let reference = registry_ref(&index)?;
        let store = cx.path(STORE);
        if std::fs::read_to_string(cx.path(SEEDED))
            .unwrap_or_default()
            .trim()
            != want
        {
            let s = seed(&layout, &store)?;
            failpoint("registry:after-seed");
            write_atomic(&cx.path(SEEDED), want.as_bytes(), PUBLIC)?;
            eprintln!(
                "registry: seeded {} images ({} blobs copied, {} present, {} bytes)",
                s.images.len(),
                s.blobs_copied,
                s.blobs_present,
                s.bytes_copied
            );
        }
        let image_there = cx
            .runner
            .engine_get(&format!("/images/{reference}/json"), ENGINE_TIMEOUT)
            .is_ok();
        if !image_there {
            let work = PathBuf::from("/run/hc-registry-load");
            let (script, manifest) = load_script(
                &read_json(&layout.join("manifest.json"))?,
                &reference,
                &layout,
                &work,
            )?;
            let w = cx.path(&work.to_string_lossy());
            std::fs::create_dir_all(&w).map_err(|e| format!("creating {}: {e}", w.display()))?;
            write_atomic(
                &w.join("manifest.json"),
                manifest.to_string().as_bytes(),
                PUBLIC,
            )?;
            cx.runner.run(&["sh", "-c", &script])?;
        }
        write_atomic(&cx.path(CONFIG), config_yml().as_bytes(), PUBLIC)?;
        match container(cx) {
            Some((true, image)) if image == reference => {}
            Some(_) => {
                cx.runner.engine(
                    "DELETE",
                    &format!("/containers/{CONTAINER}?force=true"),
                    None,
                    ENGINE_TIMEOUT,
                )?;
                create(cx, &reference)?;
            }
            None => create(cx, &reference)?,
        }
        let t = Instant::now();
        while !answers() {
            if t.elapsed() > Duration::from_secs(120) {
                return Err(format!(
                    "the registry does not answer on {ADDR} after 120 s"
                ));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        Ok(())
    }

    fn status(&self, cx: &Ctx) -> Vec<String> {
        let Ok((index, _)) = layout_index(cx) else {
            return Vec::new();
        };
        let n = index["manifests"].as_array().map_or(0, Vec::len);
        let up = if answers() {
            "serving"
        } else {
            "not answering"
        };
        vec![format!("registry {ADDR}: {up}, {n} images carried")]
    }
}

/// Creates and starts the registry container: host network (it listens on
/// loopback only), restarted by dockerd after a reboot.
fn create(cx: &Ctx, reference: &str) -> Result<()> {
    let body = json!({
        "Image": reference,
        "HostConfig": {
            "NetworkMode": "host",
            "RestartPolicy": {"Name": "always"},
            "Binds": [
                format!("{STORE}:/var/lib/docker-registry"),
                format!("{CONFIG}:/etc/docker/registry/config.yml:ro"),
            ],
        },
    });
    cx.runner.engine(
        "POST",
        &format!("/containers/create?name={CONTAINER}"),
        Some(&body.to_string()),
        ENGINE_TIMEOUT,
    )?;
    cx.runner.engine(
        "POST",
        &format!("/containers/{CONTAINER}/start"),
        None,
        ENGINE_TIMEOUT,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_script_takes_one_image_and_its_blobs() {
        let m = json!([
            {"Config": "blobs/sha256/aa", "RepoTags": ["homecloud/base:1"], "Layers": ["blobs/sha256/bb"]},
            {"Config": "blobs/sha256/cc", "RepoTags": ["homecloud/registry:2"], "Layers": ["blobs/sha256/dd", "blobs/sha256/ee"]},
        ]);
        let (s, one) = load_script(&m, "homecloud/registry:2", Path::new("/l"), Path::new("/w"))
            .expect("script");
        assert_eq!(
            s,
            "tar -c -C /w manifest.json -C /l blobs/sha256/cc blobs/sha256/dd blobs/sha256/ee | docker load"
        );
        assert_eq!(one.as_array().map(Vec::len), Some(1));
        assert!(load_script(&m, "homecloud/nosuch:1", Path::new("/l"), Path::new("/w")).is_err());
        let bad = json!([{"Config": "blobs/sha256/a; rm -rf /", "RepoTags": ["homecloud/registry:2"], "Layers": []}]);
        assert!(load_script(
            &bad,
            "homecloud/registry:2",
            Path::new("/l"),
            Path::new("/w")
        )
        .is_err());
    }

    #[test]
    fn the_registry_is_found_by_name() {
        let i = json!({"manifests": [
            {"annotations": {"io.containerd.image.name": "homecloud/base:1"}},
            {"annotations": {"io.containerd.image.name": "homecloud/registry:2.8"}},
        ]});
        assert_eq!(registry_ref(&i).expect("found"), "homecloud/registry:2.8");
        assert!(registry_ref(&json!({"manifests": []})).is_err());
    }

    #[test]
    fn the_config_listens_on_loopback_without_auth() {
        let c = config_yml();
        assert!(c.contains("addr: 127.0.0.1:5000"));
        assert!(!c.contains("auth"));
        assert!(c.contains("rootdirectory: /var/lib/docker-registry"));
    }
}
