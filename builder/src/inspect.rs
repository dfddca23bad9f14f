// SPDX-License-Identifier: Apache-2.0
//! `hc-image inspect` (build host or any workstation): what is in an image,
//! ours or Armbian's, read without mounting, plus lint findings.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::disk::{read_table, FoundPart};
use crate::error::InputError;
use crate::io::sha256_hex;
use crate::probe::{probe, FsInfo};
use crate::size::human;
use crate::spec::{DataDirs, TableKind};

#[derive(Debug, Serialize)]
pub struct Report {
    pub image: String,
    pub size: u64,
    pub table: TableKind,
    pub partitions: Vec<PartReport>,
    pub blobs: Vec<BlobReport>,
    /// Service images carried in the root filesystem (`containers`).
    pub images: Vec<CarriedImage>,
    pub lint: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct CarriedImage {
    pub reference: String,
    pub manifest: String,
    pub layers: usize,
    /// Compressed bytes of its layers.
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct PartReport {
    #[serde(flatten)]
    pub part: FoundPart,
    pub fs: Option<FsInfo>,
}

#[derive(Debug, Serialize)]
pub struct BlobReport {
    pub name: String,
    pub offset: u64,
    pub size: u64,
    /// Where the expectation came from: the manifest, or a board's pin.
    pub expected_from: String,
    pub expected_sha256: String,
    pub found_sha256: String,
    pub matches: bool,
}

fn read_at(f: &mut File, off: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(off))
        .context("seeking in the image")?;
    let n = crate::fs::read_full(f, &mut buf).context("reading the image")?;
    buf.truncate(n);
    Ok(buf)
}

pub fn inspect(path: &Path) -> Result<Report> {
    let mut f = File::open(path).map_err(|e| {
        InputError::new(
            path.display().to_string(),
            "IMAGE",
            format!("cannot open it: {e}"),
            "give the path of a .img file (decompress .zst/.xz first)",
        )
    })?;
    let size = f.metadata().context("reading image size")?.len();
    let (table, parts) = read_table(&mut f).map_err(|e| {
        InputError::new(
            path.display().to_string(),
            "IMAGE",
            format!("{e:#}"),
            "give a disk image with an MBR or GPT",
        )
    })?;
    let mut lint = Vec::new();
    let mut partitions = Vec::new();
    for p in &parts {
        let fs = probe(&mut f, p.start).context("probing a filesystem")?;
        if p.start + p.size > size {
            lint.push(format!(
                "partition {} ends at {} beyond the image's {} bytes (truncated image?)",
                p.number,
                p.start + p.size,
                size
            ));
        }
        partitions.push(PartReport {
            part: p.clone(),
            fs,
        });
    }
    for (i, a) in parts.iter().enumerate() {
        for b in &parts[i + 1..] {
            if a.start < b.start + b.size && b.start < a.start + a.size {
                lint.push(format!("partitions {} and {} overlap", a.number, b.number));
            }
        }
    }

    // Expected blobs: the manifest beside the image, else every known board's pins.
    let manifest = path
        .parent()
        .map(|d| d.join("manifest.json"))
        .and_then(|m| std::fs::read(m).ok())
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .filter(|m| {
            m["artifacts"]["image"]["file"].as_str() == path.file_name().and_then(|n| n.to_str())
        });
    let mut blobs = Vec::new();
    if let Some(m) = &manifest {
        for b in m["blobs"].as_array().into_iter().flatten() {
            let (Some(off), Some(len), Some(sha)) = (
                b["offset"].as_u64(),
                b["size"].as_u64(),
                b["sha256"].as_str(),
            ) else {
                continue;
            };
            let found = sha256_hex(&read_at(&mut f, off, len)?);
            blobs.push(BlobReport {
                name: b["name"].as_str().unwrap_or("?").to_string(),
                offset: off,
                size: len,
                expected_from: "manifest.json".into(),
                expected_sha256: sha.to_string(),
                matches: found == sha,
                found_sha256: found,
            });
        }
    } else {
        let dirs = DataDirs::locate();
        for name in dirs.board_names() {
            let Ok((board, _)) = dirs.load_board(&name) else {
                continue;
            };
            for b in &board.blobs {
                let data = read_at(&mut f, b.offset.bytes(), b.size)?;
                if data.iter().all(|&x| x == 0) {
                    continue;
                }
                let found = sha256_hex(&data);
                blobs.push(BlobReport {
                    name: format!("{} ({name} {})", b.name, b.version),
                    offset: b.offset.bytes(),
                    size: b.size,
                    expected_from: format!("boards/{name}.toml"),
                    expected_sha256: b.sha256.clone(),
                    matches: found == b.sha256,
                    found_sha256: found,
                });
            }
        }
    }
    for b in &blobs {
        if manifest.is_some() && !b.matches {
            lint.push(format!(
                "blob {} at offset {} does not match the manifest",
                b.name, b.offset
            ));
        }
        for p in &parts {
            if b.offset < p.start + p.size && p.start < b.offset + b.size {
                lint.push(format!("blob {} overlaps partition {}", b.name, p.number));
            }
        }
        if table == TableKind::Gpt && b.offset < crate::plan::GPT_PRIMARY_END {
            lint.push(format!(
                "blob {} at {} lies inside the GPT entry array",
                b.name, b.offset
            ));
        }
    }
    if let Some(m) = &manifest {
        if let Some(want) = m["artifacts"]["image"]["size"].as_u64() {
            if want != size {
                lint.push(format!("image is {size} bytes, manifest says {want}"));
            }
        }
    }
    let mut images = Vec::new();
    for pr in &partitions {
        let Some(fs) = &pr.fs else { continue };
        if fs.kind == "ext4" {
            lint_ext4(path, pr.part.start, &mut lint);
            images.extend(carried_images(path, pr.part.start, &mut lint));
        }
        if fs.kind == "vfat" && fs.label == "HCBOOT" {
            lint_hcboot(path, pr.part.start, &mut lint);
        }
    }
    Ok(Report {
        image: path.display().to_string(),
        size,
        table,
        partitions,
        blobs,
        images,
        lint,
    })
}

/// The builder's `images.json` beside the carried OCI layout, if any.
fn carried_images(image: &Path, offset: u64, lint: &mut Vec<String>) -> Vec<CarriedImage> {
    let target = crate::fs::at_offset(image, offset);
    let Ok(out) = Command::new("debugfs")
        .args(["-R", "cat /usr/share/hc-image/images/images.json"])
        .arg(&target)
        .output()
    else {
        return Vec::new();
    };
    if out.stdout.is_empty() {
        return Vec::new();
    }
    let Ok(list) = serde_json::from_slice::<Vec<crate::oci::Built>>(&out.stdout) else {
        lint.push("/usr/share/hc-image/images/images.json is not the builder's".into());
        return Vec::new();
    };
    list.into_iter()
        .map(|b| CarriedImage {
            layers: b.layers.len(),
            bytes: b.layers.iter().map(|l| l.size as u64).sum(),
            reference: b.reference,
            manifest: b.manifest,
        })
        .collect()
}

fn lint_ext4(image: &Path, offset: u64, lint: &mut Vec<String>) {
    let target = crate::fs::at_offset(image, offset);
    if let Ok(out) = Command::new("debugfs")
        .args(["-R", "cat /etc/machine-id"])
        .arg(&target)
        .output()
    {
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            lint.push(format!(
                "/etc/machine-id holds a real id ({id}): every device flashed with this image would share it; ship it empty or \"uninitialized\""
            ));
        }
    }
    if let Ok(out) = Command::new("dumpe2fs").arg("-h").arg(&target).output() {
        let t = String::from_utf8_lossy(&out.stdout);
        if t.lines()
            .any(|l| l.starts_with("Filesystem features:") && l.contains("orphan_file"))
        {
            lint.push("root ext4 has orphan_file: e2fsck older than 1.47 refuses it".into());
        }
    }
}

fn lint_hcboot(image: &Path, offset: u64, lint: &mut Vec<String>) {
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()))
        .arg("::/homecloud.toml")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).replace("\r\n", "\n");
            if let Err(e) =
                hc_firstboot::config::HomecloudConfig::parse(&text, "HCBOOT/homecloud.toml")
            {
                lint.push(e.to_string());
            }
        }
        Ok(_) => lint.push("HCBOOT has no homecloud.toml: nodes will wait for one".into()),
        Err(e) => lint.push(format!("cannot run mtype to read HCBOOT: {e}")),
    }
}

pub fn print(r: &Report) {
    println!("image: {} ({}, {} bytes)", r.image, human(r.size), r.size);
    println!("table: {:?}", r.table);
    println!(
        "{:>3} {:>12} {:>10} {:<38} {:<4} {:<6} {:<8} {:<36} {:>10}",
        "#", "start", "size", "type", "boot", "fs", "label", "uuid/id", "used"
    );
    for p in &r.partitions {
        let (kind, label, id, used) = match &p.fs {
            Some(f) => (
                f.kind.as_str(),
                f.label.as_str(),
                f.id.as_str(),
                f.used.map(human).unwrap_or_else(|| "-".into()),
            ),
            None => ("?", "", "", "-".into()),
        };
        println!(
            "{:>3} {:>12} {:>10} {:<38} {:<4} {:<6} {:<8} {:<36} {:>10}",
            p.part.number,
            p.part.start,
            human(p.part.size),
            p.part.kind,
            if p.part.bootable { "*" } else { "" },
            kind,
            label,
            id,
            used
        );
    }
    if r.blobs.is_empty() {
        println!("blobs: none found");
    }
    for b in &r.blobs {
        println!(
            "blob {} at {} ({} bytes): {} (expected from {})",
            b.name,
            b.offset,
            b.size,
            if b.matches { "matches" } else { "DIFFERS" },
            b.expected_from
        );
    }
    for i in &r.images {
        println!(
            "service image {} {} ({} layers, {})",
            i.reference,
            i.manifest,
            i.layers,
            human(i.bytes)
        );
    }
    if r.lint.is_empty() {
        println!("lint: no findings");
    }
    for l in &r.lint {
        println!("lint: {l}");
    }
}
