// SPDX-License-Identifier: Apache-2.0
//! `manifest.json`: the inputs with their hashes, the disk layout, the
//! blobs, the artifacts and the host tools that made them.

use anyhow::Result;
use serde_json::json;

use super::base::{file_name, Base};
use super::outputs::Outputs;
use super::request::Request;
use crate::artifacts::ImageDigest;
use crate::exec::{self, tools};
use crate::io::{sha256_file, sha256_hex};
use crate::plan::{Layout, PartRole};
use crate::spec::TableKind;

/// What the manifest records of a finished build.
pub struct Record<'a> {
    pub base: &'a Base,
    pub base_sha256: &'a str,
    pub layout: &'a Layout,
    pub digest: &'a ImageDigest,
    pub xattrs: usize,
}

pub fn manifest(r: &Request, out: &Outputs, m: &Record) -> Result<serde_json::Value> {
    let Record {
        base,
        base_sha256,
        layout,
        digest,
        xattrs,
    } = *m;
    let partitions: Vec<_> = m
        .layout
        .partitions
        .iter()
        .map(|p| {
            json!({
                "number": p.number,
                "label": p.label,
                "start": p.region.start,
                "size": p.region.len(),
                "type": match layout.table {
                    TableKind::Mbr => format!("0x{:02x}", p.mbr_type),
                    TableKind::Gpt => p.gpt_type.to_string(),
                },
                "guid": (layout.table == TableKind::Gpt).then(|| p.gpt_guid.clone()),
                "bootable": p.bootable,
                "filesystem": match p.role { PartRole::Boot => "vfat", PartRole::Root => "ext4" },
                "fs_id": match p.role {
                    PartRole::Boot => format!("{:08X}", layout.ids.boot_volume_id),
                    PartRole::Root => layout.ids.root_uuid.to_ascii_lowercase(),
                },
            })
        })
        .collect();
    let blobs: Vec<_> = r
        .board
        .blobs
        .iter()
        .map(|b| {
            json!({
                "name": b.name,
                "package": b.package,
                "version": b.version,
                "deb_sha256": b.deb_sha256,
                "path": b.path,
                "offset": b.offset.bytes(),
                "size": b.size,
                "sha256": b.sha256,
            })
        })
        .collect();
    let overlays: Vec<_> = r
        .profile
        .overlays
        .iter()
        .map(|o| json!({"name": o}))
        .collect();
    let tools: serde_json::Map<String, serde_json::Value> =
        [tools::MKE2FS, tools::MKFS_VFAT, tools::MCOPY]
            .iter()
            .map(|t| (t.to_string(), json!(exec::version(t))))
            .collect();
    Ok(json!({
        "schema": 1,
        "hc_image_version": env!("CARGO_PKG_VERSION"),
        "source_date_epoch": r.source_date_epoch,
        "board": {"name": r.board.name, "sha256": sha256_file(&r.board_path)?},
        "image": {"name": r.profile.name, "sha256": sha256_file(&r.profile_path)?, "overlays": overlays},
        "config": {"file": file_name(&r.config_path), "sha256": sha256_hex(&r.config_bytes)},
        "base": base.manifest_entry(base_sha256, r)?,
        "disk": {
            "table": layout.table,
            "size": layout.disk_size,
            "mbr_signature": (layout.table == TableKind::Mbr).then(|| format!("{:08x}", layout.ids.mbr_signature)),
            "disk_guid": (layout.table == TableKind::Gpt).then(|| layout.ids.disk_guid.clone()),
            "partitions": partitions,
            "ext4_features": base.ext4_features(),
            "xattrs_set_after_mke2fs": xattrs,
        },
        "blobs": blobs,
        "artifacts": {
            "image": {"file": out.img.file_name(), "size": digest.size, "sha256": digest.sha256, "mapped_bytes": digest.mapped_bytes},
            "zst": {"file": out.zst.file_name(), "sha256": digest.zst_sha256},
            "bmap": {"file": out.bmap.file_name(), "sha256": digest.bmap_sha256},
        },
        "tools": tools,
    }))
}
