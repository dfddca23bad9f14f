// SPDX-License-Identifier: Apache-2.0
//! `--base`: reuse the ext4 root of an Armbian disk image (build host).
//!
//! The root partition is copied out by offset (no mount, no loop device),
//! resized with `resize2fs` and modified with `debugfs -w`, so it keeps its
//! feature set and UUID, which Armbian's fstab and armbianEnv.txt name.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::error::InputError;
use crate::exec::{self, tools};
use crate::fs::read_full;
use crate::io::sha256_file;
use crate::size::MIB;
use crate::spec::BoardSpec;
use crate::tarstream::{Extra, ExtraKind};

pub struct Imported {
    pub source: PathBuf,
    pub sha256: String,
    pub root_file: PathBuf,
    pub fs_size: u64,
    pub uuid: String,
    pub features: String,
    pub partition: u32,
}

fn input(path: &Path, problem: impl Into<String>, fix: &str) -> anyhow::Error {
    InputError::new(path.display().to_string(), "--base", problem, fix).into()
}

/// The sha256 the base must have: `--base-sha256`, a `.sha256`/`.sha` file
/// beside it (Armbian publishes these), or the board's pin for that file name.
fn pin_for(img: &Path, flag: Option<&str>, board: &BoardSpec) -> Result<(String, String)> {
    if let Some(p) = flag {
        return Ok((p.trim().to_ascii_lowercase(), "--base-sha256".into()));
    }
    for ext in ["sha256", "sha"] {
        let mut side = img.as_os_str().to_owned();
        side.push(format!(".{ext}"));
        let side = PathBuf::from(side);
        if let Ok(t) = std::fs::read_to_string(&side) {
            let h = t
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            return Ok((h, side.display().to_string()));
        }
    }
    let name = img.file_name().map(|n| n.to_string_lossy().into_owned());
    if let Some(a) = &board.armbian {
        if name.as_deref() == Some(a.file.as_str()) {
            return Ok((
                a.sha256.clone(),
                format!("boards/{}.toml armbian.sha256", board.name),
            ));
        }
    }
    Err(input(
        img,
        "no sha256 pin for this image",
        "pass --base-sha256 HASH, or keep the .sha file Armbian publishes next to the image",
    ))
}

/// Checks the pin, decompresses if needed, and copies the ext4 root out.
pub fn import(img: &Path, flag: Option<&str>, board: &BoardSpec, work: &Path) -> Result<Imported> {
    if !img.is_file() {
        return Err(input(
            img,
            "no such file",
            "check the path given with --base",
        ));
    }
    let (want, from) = pin_for(img, flag, board)?;
    let got = sha256_file(img)?;
    if got != want {
        return Err(input(
            img,
            format!("sha256 is {got} but {from} says {want}"),
            "download the image again, or correct the pin if you trust this file",
        ));
    }
    let mut magic = [0u8; 6];
    File::open(img)
        .and_then(|mut f| f.read_exact(&mut magic))
        .with_context(|| format!("reading {}", img.display()))?;
    let raw = if magic == [0xfd, b'7', b'z', b'X', b'Z', 0] {
        let out = work.join("base.img");
        unxz(img, &out)?;
        out
    } else {
        img.to_path_buf()
    };
    let mut f = File::open(&raw).with_context(|| format!("opening {}", raw.display()))?;
    let (_, parts) = crate::disk::read_table(&mut f).map_err(|e| {
        input(
            img,
            format!("no readable partition table: {e:#}"),
            "pass an Armbian .img or .img.xz",
        )
    })?;
    let mut root = None;
    let mut seen = Vec::new();
    for p in &parts {
        let info = crate::probe::probe(&mut f, p.start)
            .with_context(|| format!("probing partition {} of {}", p.number, raw.display()))?;
        seen.push(format!(
            "{}: {} at {}",
            p.number,
            info.as_ref().map_or("unknown", |i| i.kind.as_str()),
            p.start
        ));
        if let Some(i) = info.filter(|i| i.kind == "ext4") {
            root = Some((p.clone(), i));
        }
    }
    let Some((part, info)) = root else {
        return Err(input(
            img,
            format!(
                "no ext4 root partition (found {})",
                if seen.is_empty() {
                    "no partitions".into()
                } else {
                    seen.join(", ")
                }
            ),
            "pass an Armbian image whose root filesystem is ext4",
        ));
    };
    let root_file = work.join("armbian-root.ext4");
    copy_range(&mut f, part.start, info.size, &root_file)?;
    let fsck = Command::new(tools::E2FSCK)
        .arg("-fp")
        .arg(&root_file)
        .output()
        .context("starting e2fsck")?;
    // 0 clean, 1 corrected: both leave a filesystem resize2fs accepts.
    if fsck.status.code().is_none_or(|c| c > 1) {
        return Err(input(
            img,
            format!(
                "its root filesystem has errors: {}",
                String::from_utf8_lossy(&fsck.stdout).trim()
            ),
            "use an intact image",
        ));
    }
    let used = info.used.unwrap_or(info.size);
    let target = (info.size.max(used + 256 * MIB)).div_ceil(MIB) * MIB;
    exec::run(
        Command::new(tools::RESIZE2FS)
            .arg(&root_file)
            .arg(format!("{}K", target / 1024)),
    )?;
    let features = dumpe2fs_features(&root_file)?;
    Ok(Imported {
        source: img.to_path_buf(),
        sha256: got,
        root_file,
        fs_size: target,
        uuid: info.id.to_ascii_uppercase(),
        features,
        partition: part.number,
    })
}

fn unxz(src: &Path, dst: &Path) -> Result<()> {
    let f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut dec = liblzma::read::XzDecoder::new_multi_decoder(std::io::BufReader::new(f));
    let mut out = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = read_full(&mut dec, &mut buf).map_err(|e| {
            input(
                src,
                format!("the .xz stream is truncated or corrupt ({e})"),
                "download the image again",
            )
        })?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            out.seek(SeekFrom::Start(pos)).context("seeking")?;
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", dst.display()))?;
        }
        pos += n as u64;
    }
    out.set_len(pos).context("sizing the decompressed image")?;
    Ok(())
}

fn copy_range(f: &mut File, start: u64, len: u64, dst: &Path) -> Result<()> {
    let mut out = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    f.seek(SeekFrom::Start(start))
        .context("seeking to the root partition")?;
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        f.read_exact(&mut buf[..n])
            .context("reading the root partition (is the image truncated?)")?;
        if buf[..n].iter().any(|&b| b != 0) {
            out.seek(SeekFrom::Start(pos)).context("seeking")?;
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", dst.display()))?;
        }
        pos += n as u64;
        left -= n as u64;
    }
    out.set_len(len).context("sizing the root copy")?;
    Ok(())
}

pub fn dumpe2fs_features(fs: &Path) -> Result<String> {
    let out = exec::run(Command::new("dumpe2fs").arg("-h").arg(fs))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem features:"))
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(","))
}

/// Which of `paths` (relative, no leading /) are directories in the ext4 image.
pub fn existing_dirs(fs: &Path, paths: &[String]) -> Result<std::collections::HashSet<String>> {
    let mut uniq: Vec<&String> = paths.iter().collect();
    uniq.sort();
    uniq.dedup();
    let mut script = String::new();
    for p in &uniq {
        if p.contains(['"', '\n']) {
            bail!("cannot look up {p:?} with debugfs");
        }
        script.push_str(&format!("stat \"/{p}\"\n"));
    }
    let sp = fs.with_extension("lookup.debugfs");
    std::fs::write(&sp, script).with_context(|| format!("writing {}", sp.display()))?;
    let out = exec::run(Command::new(tools::DEBUGFS).arg("-f").arg(&sp).arg(fs))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = std::collections::HashSet::new();
    for chunk in text.split("debugfs: stat ").skip(1) {
        let (name, rest) = chunk.split_once('\n').unwrap_or((chunk, ""));
        if rest.contains("Type: directory") {
            found.insert(
                name.trim()
                    .trim_matches('"')
                    .trim_start_matches('/')
                    .to_string(),
            );
        }
    }
    Ok(found)
}

/// Writes the overlay and baked files into the imported root with debugfs.
pub fn apply_extras(imp: &Imported, extras: &[Extra], work: &Path) -> Result<()> {
    let dir = work.join("debugfs-src");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut sorted: Vec<&Extra> = extras.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut script = String::new();
    for (i, e) in sorted.iter().enumerate() {
        if e.path.contains(['"', '\n', ' ']) {
            bail!(
                "cannot write /{} with debugfs: unsupported character in the path",
                e.path
            );
        }
        let p = format!("/{}", e.path);
        let type_bits = match &e.kind {
            ExtraKind::Dir => {
                script.push_str(&format!("mkdir {p}\n"));
                0o040000
            }
            ExtraKind::File(data) => {
                let src = dir.join(i.to_string());
                std::fs::write(&src, data).with_context(|| format!("writing {}", src.display()))?;
                script.push_str(&format!("rm {p}\nwrite {} {p}\n", src.display()));
                0o100000
            }
            ExtraKind::Symlink(t) => {
                script.push_str(&format!("rm {p}\nsymlink {p} {t}\n"));
                0o120000
            }
        };
        script.push_str(&format!(
            "sif {p} mode 0{:o}\nsif {p} uid {}\nsif {p} gid {}\n",
            type_bits | e.mode,
            e.uid,
            e.gid
        ));
    }
    let sp = work.join("extras.debugfs");
    std::fs::write(&sp, script).with_context(|| format!("writing {}", sp.display()))?;
    let out = exec::run(
        Command::new(tools::DEBUGFS)
            .arg("-w")
            .arg("-f")
            .arg(&sp)
            .arg(&imp.root_file),
    )?;
    crate::fs::debugfs_ok(
        &out.stderr,
        &[("mkdir", "already exists"), ("rm:", "not found")],
    )
    .context("writing files into the Armbian root with debugfs")?;
    exec::run(Command::new(tools::E2FSCK).arg("-fn").arg(&imp.root_file))
        .context("checking the modified Armbian root with e2fsck -fn")?;
    Ok(())
}
