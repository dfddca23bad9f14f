// SPDX-License-Identifier: Apache-2.0
//! The base's tar stream with the builder's additions: entries an addition
//! replaces are dropped, additions are appended, owners and modes come from
//! the declarations, never from the build host.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};

use anyhow::{Context, Result};

use super::read::{Scanner, BLOCK};

/// Rewrites the mode/uid/gid of a ustar header and fixes its checksum.
fn set_owner_mode(h: &mut [u8], mode: u32, uid: u64, gid: u64) {
    let put = |field: &mut [u8], v: u64| {
        let w = field.len() - 1;
        if v < 8u64.pow(w as u32) {
            let s = format!("{v:0w$o}");
            field[..w].copy_from_slice(s.as_bytes());
            field[w] = 0;
        }
    };
    put(&mut h[100..108], u64::from(mode));
    put(&mut h[108..116], uid);
    put(&mut h[116..124], gid);
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h[..BLOCK].iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

/// A file or directory added on top of the base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    pub path: String,
    pub kind: ExtraKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// Result of a merge: xattrs `mke2fs` does not carry, to be set afterwards.
#[derive(Debug, Default)]
pub struct MergeReport {
    pub xattrs: Vec<(String, String, Vec<u8>)>,
    pub members: u64,
}

/// Raw records for a root-owned 0755 directory, with a GNU long-name record
/// when the path does not fit the ustar field.
fn dir_record(path: &str, mtime: u64) -> Vec<u8> {
    let name = format!("./{path}/");
    let mut out = Vec::new();
    let header = |typeflag: u8, name: &[u8], size: u64, mode: u32| {
        let mut h = [0u8; BLOCK];
        let n = name.len().min(99);
        h[..n].copy_from_slice(&name[..n]);
        h[156] = typeflag;
        h[257..265].copy_from_slice(b"ustar  \0");
        let put = |h: &mut [u8; BLOCK], at: usize, w: usize, v: u64| {
            let s = format!("{v:0w$o}", w = w - 1);
            h[at..at + w - 1].copy_from_slice(s.as_bytes());
        };
        put(&mut h, 100, 8, u64::from(mode));
        put(&mut h, 108, 8, 0);
        put(&mut h, 116, 8, 0);
        put(&mut h, 124, 12, size);
        put(&mut h, 136, 12, mtime);
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    };
    if name.len() >= 100 {
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        out.extend_from_slice(&header(b'L', b"././@LongLink", data.len() as u64, 0o644));
        data.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
        out.extend_from_slice(&data);
    }
    out.extend_from_slice(&header(b'5', name.as_bytes(), 0, 0o755));
    out
}

/// Writes `base` with `extras` replacing same-path entries, as one tar stream.
pub fn merge(
    base: impl Read,
    extras: &[Extra],
    mtime: u64,
    out: &mut dyn Write,
) -> Result<MergeReport> {
    // Directories already in the base keep their place (their children follow
    // them) and only take the declared owner and mode.
    let dir_extras: HashMap<&str, &Extra> = extras
        .iter()
        .filter(|e| e.kind == ExtraKind::Dir)
        .map(|e| (e.path.as_str(), e))
        .collect();
    let replaced: HashSet<&str> = extras
        .iter()
        .filter(|e| e.kind != ExtraKind::Dir)
        .map(|e| e.path.as_str())
        .collect();
    let mut applied: HashSet<String> = HashSet::new();
    let mut have_dirs: HashSet<String> = HashSet::new();
    let mut s = Scanner::new(base);
    let mut report = MergeReport::default();
    let mut files: HashMap<String, (u32, u64, u64)> = HashMap::new();
    while let Some(mut m) = s.next_member()? {
        if replaced.contains(m.path.as_str()) {
            s.skip_data()?;
            continue;
        }
        match m.typeflag {
            b'0' | 0 | b'7' | b'S' => {
                files.insert(m.path.clone(), (m.mode, m.uid, m.gid));
            }
            b'1' => {
                // mke2fs applies a hard-link entry's own mode to the shared
                // inode, so make it say what the target says.
                if let Some((mode, uid, gid)) = m.link.as_ref().and_then(|l| files.get(l)) {
                    let at = m.main_at;
                    set_owner_mode(&mut m.headers[at..at + BLOCK], *mode, *uid, *gid);
                }
            }
            b'5' => {
                if let Some(e) = dir_extras.get(m.path.as_str()) {
                    let at = m.main_at;
                    set_owner_mode(&mut m.headers[at..at + BLOCK], e.mode, e.uid, e.gid);
                    applied.insert(m.path.clone());
                }
            }
            _ => {}
        }
        // mke2fs needs every parent before its children; some tarballs
        // (made from a subtree) leave them out.
        let mut missing = Vec::new();
        let mut p = m.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if have_dirs.contains(parent) {
                break;
            }
            missing.push(parent.to_string());
            p = parent;
        }
        for d in missing.into_iter().rev() {
            out.write_all(&dir_record(&d, mtime))
                .context("writing the root tar stream")?;
            have_dirs.insert(d);
        }
        if m.typeflag == b'5' {
            have_dirs.insert(m.path.clone());
        }
        for (name, value) in &m.xattrs {
            if name != "security.capability" {
                report
                    .xattrs
                    .push((format!("/{}", m.path), name.clone(), value.clone()));
            }
        }
        out.write_all(&m.headers)
            .context("writing the root tar stream")?;
        s.copy_data(out)?;
        report.members += 1;
    }
    let mut b = tar::Builder::new(out);
    // Parents first, so a new directory exists before its files.
    let mut sorted: BTreeMap<&str, &Extra> = BTreeMap::new();
    for e in extras {
        if !applied.contains(&e.path) {
            sorted.insert(e.path.as_str(), e);
        }
    }
    for e in sorted.values() {
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(mtime);
        let path = format!("./{}", e.path);
        match &e.kind {
            ExtraKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), io::empty())
            }
            ExtraKind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, &path, &data[..])
            }
            ExtraKind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &path, target)
            }
        }
        .with_context(|| format!("adding /{} to the root tar stream", e.path))?;
        report.members += 1;
    }
    b.into_inner().context("finishing the root tar stream")?;
    Ok(report)
}
