// SPDX-License-Identifier: Apache-2.0
//! Service images from pinned Debian packages (`hc-image images`).
//!
//! `recipe` is the data (`images/containers/NAME.toml`), `resolve` pins a
//! recipe's dependency closure from the suite's index, `layer` turns each
//! .deb into a layer without running anything, `layout` writes an OCI
//! layout that `docker load` and registries read, `sbom` lists what is in
//! each image. No emulation: an arm64 image builds as fast as an amd64 one.

mod fetch;
pub mod layer;
pub mod layout;
pub mod pypi;
pub mod recipe;
pub mod resolve;
pub mod sbom;
pub mod upstream;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::blobs::{cache_dir, http_get, mirror, Fetched};
use crate::error::InputError;
use crate::io::{sha256_hex, write_atomic};
use crate::spec::Arch;
use layer::Layer;
pub use recipe::ARCHES;
use recipe::{Pin, Recipe};

/// The pinned .deb, from the cache when its hash matches.
fn fetch_pinned(p: &Pin, file: &str, i: usize) -> Result<Vec<u8>> {
    let cached = cache_dir()
        .join("debs/sha256")
        .join(format!("{}.deb", p.sha256));
    let url = format!("{}/{}", mirror(), p.filename);
    fetch::verified(
        &cached,
        &url,
        &p.sha256,
        || {
            InputError::new(
                file,
                format!("pins[{i}].version"),
                format!(
                    "{} {} ({}) is no longer on the mirror",
                    p.package, p.version, p.arch
                ),
                "run `hc-image images pin NAME` to pin the suite's current packages",
            )
        },
        |got| {
            InputError::new(
                file,
                format!("pins[{i}].sha256"),
                format!("{url} has sha256 {got}, the pin says {}", p.sha256),
                "check the mirror (HC_DEBIAN_MIRROR); if the package was rebuilt, re-pin with `hc-image images pin NAME`",
            )
        },
    )
}

#[derive(Serialize, Deserialize)]
struct LayerMeta {
    digest: String,
    diff_id: String,
    mtime: u64,
}

fn cached_layer(meta_path: &Path, dir: &Path) -> Option<Layer> {
    let m: LayerMeta = serde_json::from_slice(&std::fs::read(meta_path).ok()?).ok()?;
    let blob = std::fs::read(dir.join(&m.digest)).ok()?;
    (sha256_hex(&blob) == m.digest).then_some(Layer {
        blob,
        digest: m.digest,
        diff_id: m.diff_id,
        mtime: m.mtime,
    })
}

fn store_layer(meta_path: &Path, dir: &Path, l: &Layer) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join(&l.digest), &l.blob)?;
    let m = LayerMeta {
        digest: l.digest.clone(),
        diff_id: l.diff_id.clone(),
        mtime: l.mtime,
    };
    write_atomic(meta_path, &serde_json::to_vec(&m)?)
}

/// A package's layer, built once per .deb and kept in the cache.
fn package_layer(p: &Pin, file: &str, i: usize) -> Result<Layer> {
    let dir = cache_dir().join(format!("oci/layers-v{}", layer::LAYER_FORMAT));
    let meta_path = dir.join(format!("{}.json", p.sha256));
    if let Some(l) = cached_layer(&meta_path, &dir) {
        return Ok(l);
    }
    let deb = fetch_pinned(p, file, i)?;
    let l = layer::from_deb(&deb)
        .with_context(|| format!("unpacking {} {} ({})", p.package, p.version, p.arch))?;
    store_layer(&meta_path, &dir, &l)?;
    Ok(l)
}

/// The layer of a pinned wheel's files, cached by wheel and file list.
fn wheel_layer(w: &recipe::WheelPin, spec: &recipe::PypiSpec, file: &str) -> Result<Layer> {
    let key = sha256_hex(format!("{}{:?}", w.sha256, spec.files).as_bytes());
    let dir = cache_dir().join(format!("oci/layers-v{}", layer::LAYER_FORMAT));
    let meta_path = dir.join(format!("wheel-{key}.json"));
    if let Some(l) = cached_layer(&meta_path, &dir) {
        return Ok(l);
    }
    let l = pypi::layer(&pypi::fetch(w, file)?, spec, file)?;
    store_layer(&meta_path, &dir, &l)?;
    Ok(l)
}

/// Packages of at least this .deb size get a layer of their own, shared
/// by every image that has them; smaller ones share one layer per image.
/// overlayfs stacks at most 128 layers: calibre-web alone has 133 packages.
pub const OWN_LAYER_MIN: u64 = 256 << 10;
const MAX_OWN_LAYERS: usize = 96;

/// The pins of an image split into those with a layer of their own and
/// the small ones merged into one.
fn split_pins<'a>(pins: &[&'a Pin]) -> (Vec<&'a Pin>, Vec<&'a Pin>) {
    let (mut own, mut small): (Vec<&Pin>, Vec<&Pin>) =
        pins.iter().partition(|p| p.size >= OWN_LAYER_MIN);
    if own.len() > MAX_OWN_LAYERS {
        own.sort_by_key(|p| std::cmp::Reverse(p.size));
        small.extend(own.split_off(MAX_OWN_LAYERS));
        own.sort_by(|a, b| a.package.cmp(&b.package));
    }
    small.sort_by(|a, b| a.package.cmp(&b.package));
    (own, small)
}

/// The layer of an image's small packages, cached by their hashes.
fn merged_layer(small: &[&Pin], file: &str, r: &Recipe) -> Result<Layer> {
    let key = sha256_hex(
        small
            .iter()
            .map(|p| p.sha256.as_str())
            .collect::<Vec<_>>()
            .join(",")
            .as_bytes(),
    );
    let dir = cache_dir().join(format!("oci/layers-v{}", layer::LAYER_FORMAT));
    let meta_path = dir.join(format!("merged-{key}.json"));
    if let Some(l) = cached_layer(&meta_path, &dir) {
        return Ok(l);
    }
    let mut debs = Vec::new();
    for p in small {
        let i = r.pins.iter().position(|x| x == *p).unwrap_or(0);
        debs.push(fetch_pinned(p, file, i)?);
    }
    let refs: Vec<&[u8]> = debs.iter().map(Vec::as_slice).collect();
    let l = layer::from_debs(&refs)?;
    store_layer(&meta_path, &dir, &l)?;
    Ok(l)
}

/// One image as built: for `images-ARCH.json` and the tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Built {
    pub name: String,
    pub arch: String,
    pub reference: String,
    pub manifest: String,
    pub config: String,
    pub layers: Vec<BuiltLayer>,
    /// Debian packages and wheels in the image.
    pub packages: usize,
    pub wheels: usize,
    /// The SBOM, relative to the output directory.
    pub sbom: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuiltLayer {
    pub what: String,
    pub digest: String,
    pub size: usize,
}

/// `homecloud/NAME:VERSION`: the wheel's release, else the version of the
/// recipe's first package (tag-safe).
pub fn reference(name: &str, r: &Recipe, arch: Arch) -> String {
    let upstream_tag = r
        .upstream
        .as_deref()
        .and_then(|u| u.parse::<oci_client::Reference>().ok())
        .map(|u| u.tag().unwrap_or("latest").to_string());
    let v = match r.pypi.first() {
        _ if upstream_tag.is_some() => upstream_tag,
        Some(p) => Some(p.version.clone()),
        None => r
            .pins_for(arch)
            .into_iter()
            .find(|p| p.package == r.packages[0])
            .map(|p| p.version.clone()),
    };
    let tag: String = v.map_or("unpinned".to_string(), |v| {
        v.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    });
    format!("homecloud/{name}:{tag}")
}

/// Builds `names` for `arch` into `out/oci-ARCH` (an OCI layout holding
/// them all, each blob once), `out/sbom/` and `out/images-ARCH.json`.
/// Written beside as `.partial` and renamed once every blob re-hashes.
pub fn build(root: &Path, names: &[String], arch: Arch, out: &Path) -> Result<Vec<Built>> {
    let final_dir = out.join(format!("oci-{}", arch.debian()));
    let partial = crate::io::partial(&final_dir);
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    let mut lay = layout::Layout::create(&partial)?;
    let root_layer = layer::root(arch)?;
    let sbom_dir = out.join("sbom");
    std::fs::create_dir_all(&sbom_dir)
        .with_context(|| format!("creating {}", sbom_dir.display()))?;
    warm_layers(root, names, arch)?;
    let mut built = Vec::new();
    for name in names {
        let (r, path) = recipe::load(root, name)?;
        let file = path.display().to_string();
        if let Some(image) = &r.upstream {
            built.push(add_upstream(
                &mut lay, name, &r, image, arch, &file, &sbom_dir,
            )?);
            continue;
        }
        let pins = r.pins_for(arch);
        if pins.is_empty() {
            return Err(InputError::new(
                &file,
                "pins",
                format!("no package is pinned for {}", arch.debian()),
                format!("run `hc-image images pin {name}`"),
            )
            .into());
        }
        let mut layers: Vec<(Layer, String)> = vec![(root_layer.clone(), "hc-image root".into())];
        let mut certs = BTreeMap::new();
        for p in &pins {
            if r.ca_bundle && p.package == "ca-certificates" {
                let i = r.pins.iter().position(|x| x == *p).unwrap_or(0);
                certs = layer::certificates(&fetch_pinned(p, &file, i)?)?;
            }
        }
        let (own, small) = split_pins(&pins);
        if !small.is_empty() {
            let names: Vec<&str> = small.iter().map(|p| p.package.as_str()).collect();
            let l = merged_layer(&small, &file, &r)?;
            layers.push((l, format!("debs {}", names.join(" "))));
        }
        for p in &own {
            let i = r.pins.iter().position(|x| x == *p).unwrap_or(0);
            let l = package_layer(p, &file, i)?;
            layers.push((l, format!("deb {} {}", p.package, p.version)));
        }
        for spec in &r.pypi {
            let Some(w) = r.wheel_for(arch, &spec.project) else {
                return Err(InputError::new(
                    &file,
                    "wheel_pins",
                    format!(
                        "no wheel of {} is pinned for {}",
                        spec.project,
                        arch.debian()
                    ),
                    format!("run `hc-image images pin {name}`"),
                )
                .into());
            };
            let l = wheel_layer(w, spec, &file)?;
            layers.push((l, format!("wheel {}", w.filename)));
        }
        if r.ca_bundle && certs.is_empty() {
            return Err(InputError::new(
                &file,
                "ca_bundle",
                "no certificates: ca-certificates is not in the closure",
                "add ca-certificates to packages, or set ca_bundle = false",
            )
            .into());
        }
        let created = layers.iter().map(|(l, _)| l.mtime).max().unwrap_or(0);
        let cfg_layer = layer::config(&r, &certs, created)?;
        layers.push((cfg_layer, format!("hc-image config of {name}")));
        let reference = reference(name, &r, arch);
        let mut exposed = serde_json::Map::new();
        for p in &r.ports {
            exposed.insert(p.clone(), json!({}));
        }
        let mut volumes = serde_json::Map::new();
        for v in &r.volumes {
            volumes.insert(v.clone(), json!({}));
        }
        let mut env =
            vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
        env.extend(r.env.iter().cloned());
        let user = match r.users.iter().find(|u| u.name == r.user) {
            Some(u) => format!("{}:{}", u.uid, u.gid.unwrap_or(u.uid)),
            None => "0:0".into(),
        };
        let config = json!({"config": {
            "Entrypoint": r.entrypoint,
            "Cmd": r.cmd,
            "Env": env,
            "User": user,
            "WorkingDir": r.workdir,
            "ExposedPorts": exposed,
            "Volumes": volumes,
            "Labels": {
                "org.opencontainers.image.title": name,
                "org.opencontainers.image.description": r.description,
            },
        }});
        let refs: Vec<(&Layer, String)> = layers.iter().map(|(l, w)| (l, w.clone())).collect();
        let w = lay.add_image(&reference, arch, &refs, &config, created)?;
        let sbom = sbom::document(
            &reference,
            &w.manifest,
            &layout::rfc3339(created),
            &mirror(),
            &pins,
            &r.pypi
                .iter()
                .filter_map(|p| Some((p, r.wheel_for(arch, &p.project)?)))
                .collect::<Vec<_>>(),
        );
        let sbom_path = sbom_dir.join(format!("{name}-{}.spdx.json", arch.debian()));
        write_atomic(&sbom_path, &serde_json::to_vec_pretty(&sbom)?)?;
        built.push(Built {
            name: name.clone(),
            arch: arch.debian().into(),
            reference,
            manifest: w.manifest,
            config: w.config,
            layers: layers
                .iter()
                .map(|(l, what)| BuiltLayer {
                    what: what.clone(),
                    digest: format!("sha256:{}", l.digest),
                    size: l.blob.len(),
                })
                .collect(),
            packages: pins.len(),
            wheels: r.pypi.len(),
            sbom: format!("sbom/{name}-{}.spdx.json", arch.debian()),
        });
    }
    lay.finish()?;
    verify_layout(&partial)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)
            .with_context(|| format!("removing {}", final_dir.display()))?;
    }
    std::fs::rename(&partial, &final_dir)
        .with_context(|| format!("renaming {} into place", partial.display()))?;
    let summary = out.join(format!("images-{}.json", arch.debian()));
    write_atomic(&summary, &serde_json::to_vec_pretty(&built)?)?;
    Ok(built)
}

/// An upstream image, pulled by its pinned digest into the layout. Its
/// SBOM names the image only: what is inside was not built here.
fn add_upstream(
    lay: &mut layout::Layout,
    name: &str,
    r: &Recipe,
    image: &str,
    arch: Arch,
    file: &str,
    sbom_dir: &Path,
) -> Result<Built> {
    let Some((i, pin)) = r
        .upstream_pins
        .iter()
        .enumerate()
        .find(|(_, p)| p.arch == arch.debian())
    else {
        return Err(InputError::new(
            file,
            "upstream_pins",
            format!("{image} is not pinned for {}", arch.debian()),
            format!("run `hc-image images pin {name}` (while the registry is reachable)"),
        )
        .into());
    };
    let pulled = upstream::pull(image, pin, arch, file, i)?;
    let reference = reference(name, r, arch);
    let w = lay.add_pulled(&reference, arch, &pulled)?;
    let cfg: serde_json::Value =
        serde_json::from_slice(&pulled.config).with_context(|| format!("{image}: image config"))?;
    let created = cfg["created"].as_str().unwrap_or("1970-01-01T00:00:00Z");
    let mut doc = sbom::document(&reference, &w.manifest, created, &mirror(), &[], &[]);
    doc["packages"][0]["downloadLocation"] = json!(format!("{image}@{}", pin.digest));
    doc["packages"][0]["comment"] =
        json!("pulled by digest; the image was built elsewhere and its contents are not listed");
    let sbom_path = sbom_dir.join(format!("{name}-{}.spdx.json", arch.debian()));
    write_atomic(&sbom_path, &serde_json::to_vec_pretty(&doc)?)?;
    Ok(Built {
        name: name.to_string(),
        arch: arch.debian().into(),
        reference,
        manifest: w.manifest,
        config: w.config,
        layers: pulled
            .layers
            .iter()
            .map(|(d, media, data)| BuiltLayer {
                what: format!("upstream {media}"),
                digest: d.clone(),
                size: data.len(),
            })
            .collect(),
        packages: 0,
        wheels: 0,
        sbom: format!("sbom/{name}-{}.spdx.json", arch.debian()),
    })
}

/// Builds the layers of every package and wheel the images need into the
/// cache, on every core: gzip of the larger .debs is most of a cold build.
fn warm_layers(root: &Path, names: &[String], arch: Arch) -> Result<()> {
    enum Job {
        Deb(Pin, String, usize),
        Wheel(recipe::WheelPin, recipe::PypiSpec, String),
    }
    let mut jobs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        let (r, path) = recipe::load(root, name)?;
        let file = path.display().to_string();
        let (own, _) = split_pins(&r.pins_for(arch));
        for p in own {
            if seen.insert(p.sha256.clone()) {
                let i = r.pins.iter().position(|x| x == p).unwrap_or(0);
                jobs.push(Job::Deb(p.clone(), file.clone(), i));
            }
        }
        for spec in &r.pypi {
            if let Some(w) = r.wheel_for(arch, &spec.project) {
                jobs.push(Job::Wheel(w.clone(), spec.clone(), file.clone()));
            }
        }
    }
    // Biggest first, so the last job to finish is a small one.
    jobs.sort_by_key(|j| {
        std::cmp::Reverse(match j {
            Job::Deb(p, ..) => p.size,
            Job::Wheel(w, ..) => w.size,
        })
    });
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else {
                            return Ok(());
                        };
                        match job {
                            Job::Deb(p, file, i) => package_layer(p, file, *i).map(drop)?,
                            Job::Wheel(w, spec, file) => wheel_layer(w, spec, file).map(drop)?,
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("a layer worker panicked"))?
        })
    })
}

/// Every blob in the layout has the digest it is named by, and every
/// manifest's config and layers are present.
pub fn verify_layout(dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    for e in std::fs::read_dir(&blobs).with_context(|| format!("reading {}", blobs.display()))? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let got = crate::io::sha256_file(&p)?;
        if got != name {
            bail!("{} has sha256 {got}", p.display());
        }
    }
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("index.json")).context("reading index.json")?,
    )?;
    for m in index["manifests"].as_array().into_iter().flatten() {
        let d = m["digest"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("sha256:");
        let man: serde_json::Value = serde_json::from_slice(
            &std::fs::read(blobs.join(d)).with_context(|| format!("manifest {d} missing"))?,
        )?;
        let mut need = vec![man["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string()];
        for l in man["layers"].as_array().into_iter().flatten() {
            need.push(l["digest"].as_str().unwrap_or_default().to_string());
        }
        for n in need {
            if !blobs.join(n.trim_start_matches("sha256:")).is_file() {
                bail!("manifest {d} names {n}, which is not in the layout");
            }
        }
    }
    Ok(())
}

/// The suite's index for `arch`, fetched once per process.
fn index(suite: &str, arch: Arch) -> Result<resolve::Index> {
    let url = format!(
        "{}/dists/{suite}/main/binary-{}/Packages.xz",
        mirror(),
        arch.debian()
    );
    tracing::info!("reading {url}");
    let Fetched::Body(xz) = http_get(&url)? else {
        bail!("{url} does not exist: check the recipe's suite");
    };
    let mut text = String::new();
    liblzma::read::XzDecoder::new(&xz[..])
        .read_to_string(&mut text)
        .with_context(|| format!("decompressing {url}"))?;
    Ok(resolve::Index::parse(&text))
}

/// Re-pins each recipe of `names` to the suite's current closure; returns
/// a line per recipe that changed. Indexes are read once per suite and arch.
pub fn pin(root: &Path, names: &[String], dry_run: bool) -> Result<Vec<String>> {
    let mut indexes: BTreeMap<(String, &str), resolve::Index> = BTreeMap::new();
    let mut lines = Vec::new();
    for name in names {
        let (r, path) = recipe::load(root, name)?;
        let file = path.display().to_string();
        if let Some(image) = &r.upstream {
            let pins = upstream::pin(image, &file)?;
            if pins != r.upstream_pins {
                lines.push(format!(
                    "{name}: {image} pinned for {}",
                    pins.iter()
                        .map(|p| format!("{} {}", p.arch, p.digest))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                if !dry_run {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {file}"))?;
                    write_atomic(&path, with_upstream_pins(&text, &pins, &file)?.as_bytes())?;
                }
            }
            continue;
        }
        let mut pins = Vec::new();
        for arch in ARCHES {
            let key = (r.suite.clone(), arch.debian());
            if !indexes.contains_key(&key) {
                indexes.insert(key.clone(), index(&r.suite, arch)?);
            }
            let idx = &indexes[&key];
            let closure = idx.closure(&r.packages, &r.exclude).map_err(|e| {
                InputError::new(
                    &file,
                    "packages",
                    format!("{e:#}"),
                    "check the package names, or exclude what cannot be had",
                )
            })?;
            for s in closure {
                pins.push(Pin {
                    arch: arch.debian().into(),
                    package: s.package,
                    version: s.version,
                    filename: s.filename,
                    sha256: s.sha256,
                    size: s.size,
                });
            }
        }
        let mut wheels = Vec::new();
        for (i, spec) in r.pypi.iter().enumerate() {
            let (w, newer) = pypi::resolve(spec, &file, i)?;
            if let Some(n) = newer {
                lines.push(format!(
                    "{name}: {} {} pinned; {n} is out (edit pypi[{i}].version to move)",
                    spec.project, spec.version
                ));
            }
            wheels.extend(w);
        }
        if pins == r.pins && wheels == r.wheel_pins {
            continue;
        }
        let old: BTreeMap<(String, String), String> = r
            .pins
            .iter()
            .map(|p| ((p.arch.clone(), p.package.clone()), p.version.clone()))
            .collect();
        let changed = pins
            .iter()
            .filter(|p| old.get(&(p.arch.clone(), p.package.clone())) != Some(&p.version))
            .count();
        lines.push(format!(
            "{name}: {} package(s) pinned, {changed} new or changed",
            pins.len()
        ));
        if !dry_run {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {file}"))?;
            let mut text = with_pins(&text, &pins, &file)?;
            if !r.pypi.is_empty() {
                text = with_wheels(&text, &wheels, &file)?;
            }
            write_atomic(&path, text.as_bytes())?;
        }
    }
    Ok(lines)
}

/// The recipe text with the array of tables `key` replaced by one table per
/// item (`fill` writes its keys, in the order they should read); the rest is
/// kept as written.
fn with_tables<T>(
    text: &str,
    key: &str,
    items: &[T],
    file: &str,
    fill: impl Fn(&T, &mut toml_edit::Table),
) -> Result<String> {
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("parsing {file}"))?;
    doc.remove(key);
    let mut arr = toml_edit::ArrayOfTables::new();
    for item in items {
        let mut t = toml_edit::Table::new();
        fill(item, &mut t);
        arr.push(t);
    }
    doc.insert(key, toml_edit::Item::ArrayOfTables(arr));
    Ok(doc.to_string())
}

/// The recipe text with its `[[pins]]` replaced.
pub fn with_pins(text: &str, pins: &[Pin], file: &str) -> Result<String> {
    with_tables(text, "pins", pins, file, |p, t| {
        t["arch"] = toml_edit::value(p.arch.clone());
        t["package"] = toml_edit::value(p.package.clone());
        t["version"] = toml_edit::value(p.version.clone());
        t["filename"] = toml_edit::value(p.filename.clone());
        t["sha256"] = toml_edit::value(p.sha256.clone());
        t["size"] = toml_edit::value(p.size as i64);
    })
}

/// The recipe text with `[[wheel_pins]]` replaced.
pub fn with_wheels(text: &str, wheels: &[recipe::WheelPin], file: &str) -> Result<String> {
    with_tables(text, "wheel_pins", wheels, file, |w, t| {
        t["project"] = toml_edit::value(w.project.clone());
        t["arch"] = toml_edit::value(w.arch.clone());
        t["filename"] = toml_edit::value(w.filename.clone());
        t["url"] = toml_edit::value(w.url.clone());
        t["sha256"] = toml_edit::value(w.sha256.clone());
        t["size"] = toml_edit::value(w.size as i64);
    })
}

/// The recipe text with `[[upstream_pins]]` replaced.
pub fn with_upstream_pins(text: &str, pins: &[recipe::UpstreamPin], file: &str) -> Result<String> {
    with_tables(text, "upstream_pins", pins, file, |p, t| {
        t["arch"] = toml_edit::value(p.arch.clone());
        t["digest"] = toml_edit::value(p.digest.clone());
        t["size"] = toml_edit::value(p.size as i64);
    })
}

/// Where `images build` puts its output by default.
pub fn default_out() -> PathBuf {
    PathBuf::from("out/images")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_replaces_pins_and_keeps_the_rest() {
        let text = "# a comment the user wrote\ndescription = \"d\"\npackages = [\"a\"]\nentrypoint = [\"/a\"]\n\n[[pins]]\narch = \"amd64\"\npackage = \"old\"\nversion = \"0\"\nfilename = \"f\"\nsha256 = \"00\"\nsize = 1\n";
        let pin = Pin {
            arch: "arm64".into(),
            package: "a".into(),
            version: "1:2.0-1".into(),
            filename: "pool/main/a/a/a_2.0-1_arm64.deb".into(),
            sha256: "ab".repeat(32),
            size: 42,
        };
        let out = with_pins(text, std::slice::from_ref(&pin), "t.toml").expect("pins");
        assert!(out.starts_with("# a comment the user wrote\n"), "{out}");
        assert!(!out.contains("old"), "{out}");
        let r: Recipe = crate::error::parse_toml(&out, "t.toml").expect("parses");
        assert_eq!(r.pins, vec![pin.clone()]);
        assert_eq!(reference("a", &r, Arch::Arm64), "homecloud/a:1_2.0-1");
        assert_eq!(reference("a", &r, Arch::Amd64), "homecloud/a:unpinned");
    }

    #[test]
    fn upstream_pins_are_written_and_name_the_tag() {
        let text = "description = \"d\"\nupstream = \"127.0.0.1:5000/x/app:1.2\"\n";
        let pin = recipe::UpstreamPin {
            arch: "amd64".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 7,
        };
        let out = with_upstream_pins(text, std::slice::from_ref(&pin), "t.toml").expect("pins");
        let r: Recipe = crate::error::parse_toml(&out, "t.toml").expect("parses");
        r.validate("t.toml").expect("valid");
        assert_eq!(r.upstream_pins, vec![pin]);
        assert_eq!(r.pinned(Arch::Amd64), 1);
        assert_eq!(r.pinned(Arch::Arm64), 0);
        assert_eq!(reference("app", &r, Arch::Amd64), "homecloud/app:1.2");
    }
}
