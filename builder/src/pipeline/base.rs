// SPDX-License-Identifier: Apache-2.0
//! Stage 2, the base: the root filesystem the image starts from (a root
//! tarball, the cached package base, or an imported Armbian root), and what
//! each kind means for the later stages. Every difference between the kinds
//! lives in a method here, so the pipeline never matches on them.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use serde_json::json;

use super::request::{Request, Source};
use crate::armbian::Imported;
use crate::base::CachedBase;
use crate::error::InputError;
use crate::fs::{self as hfs, Ext4Params};
use crate::io::sha256_file;
use crate::plan::{Region, StableIds};
use crate::size::{human, Size, MIB};
use crate::tarstream::{self, Extra, ExtraKind, TreeStats};

/// The root filesystem source.
pub enum Base {
    /// A root tarball: `--rootfs`, or the package base (`packages`).
    Tree {
        path: PathBuf,
        stats: TreeStats,
        packages: Option<CachedBase>,
    },
    /// The ext4 root of an Armbian image, extracted to a work file.
    Armbian(Imported),
}

/// The base's sha256, still being computed beside the filesystems.
pub enum BaseHash {
    Done(String),
    Pending(JoinHandle<Result<String>>),
}

impl BaseHash {
    pub fn wait(self) -> Result<String> {
        match self {
            BaseHash::Done(s) => Ok(s),
            BaseHash::Pending(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("hashing thread panicked"))?,
        }
    }
}

impl Base {
    /// Gets the base: builds the package base when it is not cached, scans
    /// a tarball, or imports Armbian's root into `work`.
    pub fn get(req: &Request, work: &Path) -> Result<(Base, BaseHash)> {
        let (path, packages) = match &req.source {
            Source::Armbian { image, sha256 } => {
                let imp = crate::armbian::import(image, sha256.as_deref(), &req.board, work)?;
                let sha = imp.sha256.clone();
                return Ok((Base::Armbian(imp), BaseHash::Done(sha)));
            }
            Source::Rootfs(path) => (path.clone(), None),
            Source::Packages(spec) => {
                let b =
                    crate::base::ensure(spec, req.board.arch, &req.profile.name, req.refresh_base)?;
                (b.tarball.clone(), Some(b))
            }
        };
        // mke2fs is single-threaded: hash the input on the other core meanwhile.
        let src = path.clone();
        let hasher = std::thread::spawn(move || sha256_file(&src));
        let stats = scan_rootfs(&path)?;
        let base = Base::Tree {
            path,
            stats,
            packages,
        };
        Ok((base, BaseHash::Pending(hasher)))
    }

    /// The tarball's tree, when the root is written from one.
    pub fn tree(&self) -> Option<&TreeStats> {
        match self {
            Base::Tree { stats, .. } => Some(stats),
            Base::Armbian(_) => None,
        }
    }

    /// The package base, when the root is one.
    pub fn packages(&self) -> Option<&CachedBase> {
        match self {
            Base::Tree { packages, .. } => packages.as_ref(),
            Base::Armbian(_) => None,
        }
    }

    /// The filesystem ids: Armbian's fstab and armbianEnv.txt name the root
    /// by UUID, so an Armbian root keeps its own.
    pub fn stable_ids(&self, ids: StableIds) -> StableIds {
        match self {
            Base::Armbian(imp) => StableIds {
                root_uuid: imp.uuid.clone(),
                ..ids
            },
            Base::Tree { .. } => ids,
        }
    }

    /// The parent directories of `extras` the base lacks, so the tree added
    /// to it is well formed.
    pub fn missing_parents(&self, extras: &[Extra]) -> Result<Vec<Extra>> {
        let armbian_dirs = match self {
            Base::Armbian(imp) => {
                let mut wanted = Vec::new();
                for e in extras {
                    let mut p = e.path.as_str();
                    while let Some((parent, _)) = p.rsplit_once('/') {
                        wanted.push(parent.to_string());
                        p = parent;
                    }
                }
                crate::armbian::existing_dirs(&imp.root_file, &wanted)?
            }
            Base::Tree { .. } => Default::default(),
        };
        let present = |p: &str| match self {
            Base::Tree { stats, .. } => stats.dirs.contains(p),
            Base::Armbian(_) => armbian_dirs.contains(p),
        };
        Ok(missing_parents(extras, &present))
    }

    /// The root filesystem's size: given, from the profile, or from the
    /// content; an Armbian root keeps its own.
    pub fn root_size(&self, extras: &[Extra], req: &Request) -> Result<u64> {
        match self {
            Base::Tree { stats, .. } => root_size_for(stats, extras, req),
            Base::Armbian(imp) => Ok(imp.fs_size),
        }
    }

    /// Writes the root filesystem with `extras` into `img` at `region`;
    /// returns how many xattrs were set after mke2fs.
    pub fn write_root(&self, w: &RootWrite, extras: &[Extra]) -> Result<usize> {
        match self {
            Base::Tree { path, stats, .. } => {
                let params = Ext4Params {
                    image: w.img_path,
                    offset: w.region.start,
                    size: w.region.len(),
                    label: w.label,
                    uuid: &w.ids.root_uuid,
                    hash_seed: &w.ids.root_hash_seed,
                    inodes: inode_count(stats, extras, w.region.len()),
                    source_date_epoch: w.source_date_epoch,
                    workdir: w.work,
                };
                let mut report = None;
                hfs::make_ext4(&params, |out| {
                    let r = tarstream::open_tar(path)?;
                    let mut bw = std::io::BufWriter::with_capacity(1 << 20, out);
                    report = Some(tarstream::merge(r, extras, w.source_date_epoch, &mut bw)?);
                    bw.flush().context("flushing the root tar stream")?;
                    Ok(())
                })?;
                let report = report.context("merge produced no report")?;
                hfs::set_xattrs(w.img_path, w.region.start, &report.xattrs, w.work)?;
                Ok(report.xattrs.len())
            }
            Base::Armbian(imp) => {
                crate::armbian::apply_extras(imp, extras, w.work)?;
                hfs::copy_into(&imp.root_file, w.img, w.region.start)?;
                Ok(0)
            }
        }
    }

    /// The root filesystem's ext4 features, for the manifest.
    pub fn ext4_features(&self) -> String {
        match self {
            Base::Tree { .. } => hfs::EXT4_FEATURES.to_string(),
            Base::Armbian(imp) => imp.features.clone(),
        }
    }

    /// The manifest's `base` entry.
    pub fn manifest_entry(&self, sha256: &str, req: &Request) -> Result<serde_json::Value> {
        Ok(match self {
            Base::Tree {
                path,
                stats,
                packages: Some(p),
            } => {
                let list: serde_json::Map<String, serde_json::Value> = p
                    .packages
                    .iter()
                    .map(|(n, v)| (n.clone(), json!(v)))
                    .collect();
                json!({
                    "kind": "packages",
                    "file": file_name(path),
                    "sha256": sha256,
                    "recipe": crate::base::recipe(req.profile.base.as_ref().context("base")?, req.board.arch),
                    "cache_key": p.key,
                    "members": stats.members,
                    "packages": list,
                })
            }
            Base::Tree { path, stats, .. } => json!({
                "kind": "rootfs",
                "file": file_name(path),
                "sha256": sha256,
                "members": stats.members,
            }),
            Base::Armbian(imp) => json!({
                "kind": "armbian",
                "file": file_name(&imp.source),
                "sha256": sha256,
                "root_partition": imp.partition,
                "root_uuid": imp.uuid,
                "ext4_features": imp.features,
            }),
        })
    }
}

/// Where [`Base::write_root`] writes.
pub struct RootWrite<'a> {
    pub img: &'a File,
    pub img_path: &'a Path,
    pub region: Region,
    pub label: &'a str,
    pub ids: &'a StableIds,
    pub source_date_epoch: u64,
    pub work: &'a Path,
}

pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn scan_rootfs(path: &Path) -> Result<TreeStats> {
    let bad = |problem: String| {
        InputError::new(
            path.display().to_string(),
            "--rootfs",
            problem,
            "pass an uncompressed, .zst or .xz tar of a root filesystem, complete (e.g. `mmdebstrap --variant=minbase trixie rootfs.tar`)",
        )
    };
    let scanned = if tarstream::is_compressed(path)? {
        tarstream::scan(tarstream::open_tar(path)?)
    } else {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        tarstream::scan_file(f)
    };
    scanned.map_err(|e| bad(format!("{e:#}")).into())
}

/// Parent directories of the extras, so a tree added to an empty or partial
/// base is still well formed. `present` says which exist in the base.
pub fn missing_parents(extras: &[Extra], present: &dyn Fn(&str) -> bool) -> Vec<Extra> {
    let mut have: std::collections::BTreeSet<String> =
        extras.iter().map(|e| e.path.clone()).collect();
    let mut out = Vec::new();
    for e in extras {
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !have.contains(parent) && !present(parent) {
                have.insert(parent.to_string());
                out.push(Extra {
                    path: parent.to_string(),
                    kind: ExtraKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                });
            }
            p = parent;
        }
    }
    out
}

fn extras_bytes(extras: &[Extra]) -> (u64, u64) {
    let mut bytes = 0;
    for e in extras {
        bytes += match &e.kind {
            ExtraKind::File(d) => (d.len() as u64).div_ceil(4096) * 4096,
            _ => 4096,
        };
    }
    (bytes, extras.len() as u64)
}

fn root_size_for(stats: &TreeStats, extras: &[Extra], req: &Request) -> Result<u64> {
    let mut st = stats.clone();
    let (b, n) = extras_bytes(extras);
    st.block_bytes += b;
    st.inodes += n;
    let (size, key, file) = match (req.root_size, req.profile.disk.root_size) {
        (Some(s), _) => (s.bytes(), "--root-size", "command line"),
        (None, Some(s)) => (s.bytes(), "disk.root_size", req.profile_file.as_str()),
        (None, None) => return Ok(hfs::auto_root_size(&st, req.profile.disk.root_free.bytes())),
    };
    let need = hfs::ext4_needed(&st, size);
    if need > size {
        return Err(InputError::new(
            file,
            key,
            format!(
                "the root tree needs at least {} ({} bytes) in ext4 but the root filesystem is {}",
                human(need),
                need,
                human(size)
            ),
            format!(
                "raise it to {} or more, or leave it unset to size from the content",
                Size(hfs::auto_root_size(&st, 0).div_ceil(MIB) * MIB)
            ),
        )
        .into());
    }
    Ok(size)
}

fn inode_count(stats: &TreeStats, extras: &[Extra], fs_size: u64) -> u64 {
    let want = (stats.inodes + extras.len() as u64) * 5 / 4 + 1024;
    want.max(fs_size / 16384)
}
