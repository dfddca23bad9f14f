// SPDX-License-Identifier: Apache-2.0
//! Filesystems written into the image file (build host, no root, no loop
//! device): ext4 by `mke2fs -d -` fed a tar stream at the partition's byte
//! offset, FAT32 by `mkfs.vfat` + mtools in a side file copied into place.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::error::InputError;
use crate::exec::{self, tools};
use crate::size::{human, MIB};
use crate::tarstream::TreeStats;

/// Pinned so the host's `/etc/mke2fs.conf` cannot change our bytes. No
/// `orphan_file`: e2fsck before 1.47 refuses it.
pub const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 5.0
\tlazy_itable_init = 0
\tlazy_journal_init = 0

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tsmall = {
\t}
\tfloppy = {
\t}
\tbig = {
\t}
\thuge = {
\t}
";

pub const EXT4_FEATURES: &str =
    "has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize";

/// The journal mke2fs picks for a filesystem of `size` bytes (ext2fs_default_journal_size).
pub fn journal_bytes(size: u64) -> u64 {
    let blocks = size / 4096;
    4096 * match blocks {
        b if b < 2048 => 0,
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    }
}

/// Bytes the content needs in an ext4 of `size` bytes, metadata included.
pub fn ext4_needed(stats: &TreeStats, size: u64) -> u64 {
    let inodes = (size / 16384).max(stats.inodes);
    // Inode tables, bitmaps, group descriptors and reserved GDT blocks.
    let meta = inodes * 256 + size / 64;
    stats.block_bytes + journal_bytes(size) + meta
}

/// Size for an automatically sized root: content, metadata and `free`.
pub fn auto_root_size(stats: &TreeStats, free: u64) -> u64 {
    let mut size = (stats.block_bytes + free).div_ceil(MIB) * MIB;
    // Metadata grows with the size; iterate to a fixed point.
    for _ in 0..8 {
        let want = (ext4_needed(stats, size) + free).div_ceil(MIB) * MIB;
        if want <= size {
            break;
        }
        size = want;
    }
    size
}

pub struct Ext4Params<'a> {
    pub image: &'a Path,
    /// Byte offset of the partition inside `image`.
    pub offset: u64,
    pub size: u64,
    pub label: &'a str,
    pub uuid: &'a str,
    pub hash_seed: &'a str,
    pub inodes: u64,
    pub source_date_epoch: u64,
    pub workdir: &'a Path,
}

/// `file?offset=N`, the e2fsprogs way of naming a filesystem inside an image.
pub fn at_offset(image: &Path, offset: u64) -> String {
    format!("{}?offset={offset}", image.display())
}

fn conf_path(workdir: &Path) -> Result<PathBuf> {
    let p = workdir.join("mke2fs.conf");
    std::fs::write(&p, MKE2FS_CONF).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

/// Runs `mke2fs -d -` writing into `image` at the region, feeding it the
/// tar stream produced by `feed`.
pub fn make_ext4(p: &Ext4Params, feed: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let conf = conf_path(p.workdir)?;
    let mut cmd = Command::new(tools::MKE2FS);
    cmd.env("MKE2FS_CONFIG", &conf)
        .env("SOURCE_DATE_EPOCH", p.source_date_epoch.to_string())
        .env("E2FSPROGS_FAKE_TIME", p.source_date_epoch.to_string())
        .env("TZ", "UTC")
        .args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-L", p.label, "-U", p.uuid,
        ])
        .arg("-E")
        .arg(format!(
            "hash_seed={},offset={},nodiscard,root_owner=0:0",
            p.hash_seed, p.offset
        ))
        .arg("-N")
        .arg(p.inodes.to_string())
        .args(["-d", "-"])
        .arg(p.image)
        .arg(format!("{}k", p.size / 1024))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let desc = exec::describe(&cmd);
    let mut child = cmd.spawn().with_context(|| format!("starting {desc}"))?;
    let mut stdin = child.stdin.take().context("mke2fs stdin")?;
    let fed = feed(&mut stdin);
    drop(stdin);
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {desc}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("Could not allocate block")
            || stderr.contains("No free space")
            || stderr.contains("Could not allocate inode")
        {
            return Err(InputError::new(
                "images profile",
                "disk.root_size",
                format!(
                    "the root tree does not fit in a {} root filesystem ({})",
                    human(p.size),
                    stderr.trim().lines().last().unwrap_or("")
                ),
                "raise disk.root_size (or --root-size), or leave it unset to size it from the content",
            )
            .into());
        }
        if stderr.contains("libarchive") || stderr.contains("archive") && stderr.contains("not") {
            bail!(
                "{desc} cannot read tar streams ({}); install libarchive13: {}",
                stderr.trim(),
                exec::INSTALL_HINT
            );
        }
        // A broken tar stream shows as mke2fs failing; report the cause first.
        if let Err(e) = fed {
            return Err(e.context(format!(
                "streaming the root tree into mke2fs (which said: {})",
                stderr.trim()
            )));
        }
        exec::finish(&desc, out)?;
        return Ok(());
    }
    fed.context("streaming the root tree into mke2fs")?;
    Ok(())
}

/// Sets xattrs `mke2fs` does not carry over from tar (it keeps only
/// `security.capability`).
pub fn set_xattrs(
    image: &Path,
    offset: u64,
    xattrs: &[(String, String, Vec<u8>)],
    workdir: &Path,
) -> Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let dir = workdir.join("xattrs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut script = String::new();
    for (i, (path, name, value)) in xattrs.iter().enumerate() {
        if path.contains(['"', '\n']) || name.contains(['"', '\n', ' ']) {
            bail!("cannot set xattr {name:?} on {path:?}: debugfs cannot quote that name");
        }
        let vf = dir.join(i.to_string());
        std::fs::write(&vf, value).with_context(|| format!("writing {}", vf.display()))?;
        script.push_str(&format!("ea_set -f {} \"{path}\" {name}\n", vf.display()));
    }
    let sp = workdir.join("xattrs.debugfs");
    std::fs::write(&sp, script).with_context(|| format!("writing {}", sp.display()))?;
    let out = exec::run(
        Command::new(tools::DEBUGFS)
            .arg("-w")
            .arg("-f")
            .arg(&sp)
            .arg(at_offset(image, offset)),
    )?;
    debugfs_ok(&out.stderr, &[]).context("setting xattrs with debugfs")
}

/// debugfs exits 0 even when a command fails; its complaints go to stderr.
/// `allowed` pairs (command, phrase) mark complaints that are expected.
pub fn debugfs_ok(stderr: &[u8], allowed: &[(&str, &str)]) -> Result<()> {
    let err = String::from_utf8_lossy(stderr);
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| {
            let expected = l.starts_with("debugfs ")
                || l.trim().is_empty()
                || allowed.iter().any(|(c, p)| l.contains(c) && l.contains(p));
            !expected
        })
        .collect();
    if !bad.is_empty() {
        bail!("{}", bad.join("; "));
    }
    Ok(())
}

/// `e2fsck -fn` on the filesystem at `offset`: the read-back check.
pub fn check_ext4(image: &Path, offset: u64) -> Result<()> {
    exec::run(
        Command::new(tools::E2FSCK)
            .args(["-fn"])
            .arg(at_offset(image, offset)),
    )
    .context("checking the root filesystem with e2fsck -fn")?;
    Ok(())
}

/// A file or directory for the FAT partition.
pub enum FatEntry {
    Dir(String),
    File(String, Vec<u8>),
}

/// Builds a FAT32 volume in `file` (size bytes) and checks it with `fsck.vfat -n`.
pub fn make_fat(
    file: &Path,
    size: u64,
    label: &str,
    volume_id: u32,
    entries: &[FatEntry],
    source_date_epoch: u64,
    workdir: &Path,
) -> Result<()> {
    if file.exists() {
        std::fs::remove_file(file).with_context(|| format!("removing {}", file.display()))?;
    }
    exec::run(
        Command::new(tools::MKFS_VFAT)
            .args(["-F", "32", "-S", "512", "-n", label, "--invariant", "-i"])
            .arg(format!("{volume_id:08X}"))
            .arg("-C")
            .arg(file)
            .arg((size / 1024).to_string()),
    )?;
    let staging = workdir.join("fat-src");
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let mtools = |tool: &str| {
        let mut c = Command::new(tool);
        c.env("SOURCE_DATE_EPOCH", source_date_epoch.to_string())
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("TZ", "UTC")
            .arg("-i")
            .arg(file);
        c
    };
    for (i, e) in entries.iter().enumerate() {
        match e {
            FatEntry::Dir(d) => {
                exec::run(mtools(tools::MMD).arg(format!("::/{d}")))?;
            }
            FatEntry::File(path, data) => {
                let src = staging.join(i.to_string());
                std::fs::write(&src, data).with_context(|| format!("writing {}", src.display()))?;
                exec::run(mtools(tools::MCOPY).arg(&src).arg(format!("::/{path}")))?;
            }
        }
    }
    exec::run(Command::new(tools::FSCK_VFAT).arg("-n").arg(file))
        .context("checking the HCBOOT filesystem with fsck.vfat -n")?;
    Ok(())
}

/// Bytes from a FAT filesystem's start through its last FAT (boot sector,
/// reserved sectors, FATs), read from its boot sector; None when `bs` is not
/// a FAT boot sector.
pub fn fat_metadata_len(bs: &[u8]) -> Option<u64> {
    let bs = bs.get(..512)?;
    let u16at = |i: usize| u64::from(u16::from_le_bytes([bs[i], bs[i + 1]]));
    let u32at = |i: usize| u64::from(u32::from_le_bytes([bs[i], bs[i + 1], bs[i + 2], bs[i + 3]]));
    let bps = u16at(11);
    let fat_named = &bs[54..57] == b"FAT" || &bs[82..85] == b"FAT";
    if bs[510..512] != [0x55, 0xaa] || !fat_named || !matches!(bps, 512 | 1024 | 2048 | 4096) {
        return None;
    }
    let nfats = u64::from(bs[16]);
    let fatsz = match u16at(22) {
        0 => u32at(36),
        n => n,
    };
    (nfats > 0 && fatsz > 0).then(|| (u16at(14) + nfats * fatsz) * bps)
}

/// Copies `src` into `dst` at `offset`, leaving holes where `src` has zero blocks.
pub fn copy_into(src: &Path, dst: &File, offset: u64) -> Result<()> {
    let mut r = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut w = dst;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = offset;
    loop {
        let n =
            read_full(&mut r, &mut buf).with_context(|| format!("reading {}", src.display()))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            w.seek(SeekFrom::Start(pos))
                .context("seeking in the image")?;
            w.write_all(&buf[..n]).context("writing into the image")?;
        }
        pos += n as u64;
    }
    Ok(())
}

pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// sha256 of `len` bytes of `f` from `offset`.
pub fn hash_region(f: &File, offset: u64, len: u64) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut r = f;
    r.seek(SeekFrom::Start(offset))
        .context("seeking in the image")?;
    let mut h = Sha256::new();
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = (left as usize).min(buf.len());
        r.read_exact(&mut buf[..n])
            .context("reading the image back")?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_sizes_follow_e2fsprogs() {
        assert_eq!(journal_bytes(512 * MIB), 16 * MIB);
        assert_eq!(journal_bytes(1536 * MIB), 32 * MIB);
        assert_eq!(journal_bytes(4096 * MIB), 64 * MIB);
    }

    #[test]
    fn auto_size_covers_content_and_free_space() {
        let st = TreeStats {
            members: 40000,
            inodes: 40000,
            block_bytes: 900 * MIB,
            largest_dir: 100,
            dirs: Default::default(),
            kernels: Default::default(),
            initrds: Default::default(),
            boot_files: Default::default(),
        };
        let s = auto_root_size(&st, 256 * MIB);
        assert_eq!(s % MIB, 0);
        assert!(s >= ext4_needed(&st, s) + 256 * MIB);
        assert!(s < 2 * 1024 * MIB, "{s}");
    }
}
