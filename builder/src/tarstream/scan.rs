// SPDX-License-Identifier: Apache-2.0
//! One pass over a base tarball without writing anything: validates it and
//! sizes the filesystem it needs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufReader, Read};

use anyhow::{bail, Context, Result};

use super::read::Scanner;

/// What a pass over the base found: enough to size the filesystem.
#[derive(Debug, Default, Clone)]
pub struct TreeStats {
    pub members: u64,
    pub inodes: u64,
    /// File data rounded up to 4 KiB blocks, plus directory and long-symlink blocks.
    pub block_bytes: u64,
    pub largest_dir: u64,
    /// Every directory path in the tree.
    pub dirs: HashSet<String>,
    /// Kernel versions with a `boot/vmlinuz-VERSION` in the tree.
    pub kernels: std::collections::BTreeSet<String>,
    /// `boot/initrd.img-VERSION` files.
    pub initrds: std::collections::BTreeSet<String>,
    /// Contents of the boot files an ESP needs (kernels, initrds, EFI loaders).
    pub boot_files: BTreeMap<String, Vec<u8>>,
}

/// Files the builder may copy onto an EFI system partition.
pub fn is_boot_file(path: &str) -> bool {
    path.starts_with("boot/vmlinuz-")
        || path.starts_with("boot/initrd.img-")
        || path.starts_with("usr/lib/systemd/boot/efi/")
}

impl TreeStats {
    pub fn add(&mut self, typeflag: u8, data_len: u64, link_len: usize) {
        self.members += 1;
        if typeflag != b'1' {
            self.inodes += 1;
        }
        self.block_bytes += match typeflag {
            b'0' | 0 | b'7' | b'S' => data_len.div_ceil(4096) * 4096,
            b'5' => 4096,
            b'2' if link_len >= 60 => 4096,
            _ => 0,
        };
    }
}

/// Scans a base tarball without writing anything: validates it and sizes it.
pub fn scan(r: impl Read) -> Result<TreeStats> {
    scan_with(Scanner::new(r), |s| s.skip_data())
}

/// `scan` for an uncompressed tar file: file data is skipped by seeking.
pub fn scan_file(f: std::fs::File) -> Result<TreeStats> {
    let len = f.metadata().context("reading the tar file's size")?.len();
    scan_with(Scanner::new(BufReader::with_capacity(64 << 10, f)), |s| {
        s.seek_skip(len)
    })
}

fn scan_with<R: Read>(
    mut s: Scanner<R>,
    mut skip: impl FnMut(&mut Scanner<R>) -> Result<()>,
) -> Result<TreeStats> {
    let mut st = TreeStats::default();
    let mut dirs: HashMap<String, u64> = HashMap::new();
    while let Some(m) = s.next_member()? {
        st.add(
            m.typeflag,
            m.data_len,
            m.link.as_ref().map_or(0, |l| l.len()),
        );
        if m.typeflag == b'5' {
            st.dirs.insert(m.path.clone());
        }
        if let Some(v) = m.path.strip_prefix("boot/vmlinuz-") {
            st.kernels.insert(v.to_string());
        }
        if let Some(v) = m.path.strip_prefix("boot/initrd.img-") {
            st.initrds.insert(v.to_string());
        }
        let mut p = m.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !st.dirs.insert(parent.to_string()) {
                break;
            }
            st.add(b'5', 0, 0);
            p = parent;
        }
        let parent = m.path.rsplit_once('/').map_or("", |(p, _)| p).to_string();
        *dirs.entry(parent).or_default() += 1;
        if matches!(m.typeflag, b'0' | 0) && is_boot_file(&m.path) {
            let mut data = Vec::new();
            s.copy_data(&mut data)?;
            data.truncate(m.data_len as usize);
            st.boot_files.insert(m.path.clone(), data);
        } else {
            skip(&mut s)?;
        }
    }
    if st.members == 0 {
        bail!("the archive has no entries");
    }
    let largest = dirs.values().copied().max().unwrap_or(0);
    // Big directories need more than one block of entries.
    st.block_bytes += dirs
        .values()
        .map(|n| (n * 48).div_ceil(4096) * 4096)
        .sum::<u64>();
    st.largest_dir = largest;
    Ok(st)
}
