// SPDX-License-Identifier: Apache-2.0
//! Root filesystem tar streams (build host).
//!
//! The base tarball is passed through record by record, byte for byte, so
//! every owner, mode, device number, hard link, long name, sparse map and
//! xattr reaches `mke2fs -d -` exactly as the base had it. Entries that an
//! overlay replaces are dropped; overlay entries are appended after the base.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::error::InputError;

const BLOCK: usize = 512;

/// True when the file starts with a zstd or xz magic.
pub fn is_compressed(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 6];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f
        .read(&mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(n >= 4 && magic[..4] == [0x28, 0xb5, 0x2f, 0xfd]
        || n >= 6 && magic == [0xfd, b'7', b'z', b'X', b'Z', 0])
}

/// Opens a tarball, decompressing zstd and xz (recognized by magic).
pub fn open_tar(path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut f = std::fs::File::open(path).map_err(|e| {
        InputError::new(
            path.display().to_string(),
            "(file)",
            format!("cannot open it: {e}"),
            "check the path given with --rootfs",
        )
    })?;
    let mut magic = [0u8; 6];
    let n = f
        .read(&mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    drop(f);
    let f = BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    Ok(if n >= 4 && magic[..4] == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::new(f).context("starting zstd decoder")?)
    } else if n >= 6 && magic == [0xfd, b'7', b'z', b'X', b'Z', 0] {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(f))
    } else {
        Box::new(f)
    })
}

/// One archive member with the records that describe it (PAX, GNU long names).
#[derive(Debug, Clone)]
pub struct Member {
    /// Normalized path: no leading `./` or `/`, no trailing `/`; "" is the root.
    pub path: String,
    pub typeflag: u8,
    /// Bytes of data following the headers (before padding).
    pub data_len: u64,
    /// Raw header records, passed through verbatim.
    pub headers: Vec<u8>,
    /// Offset of the main ustar header inside `headers`.
    pub main_at: usize,
    pub link: Option<String>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

pub fn normalize(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    let p = p.trim_end_matches('/');
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 for large values.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn checksum_ok(h: &[u8]) -> bool {
    let stored = octal(&h[148..156]);
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    stored == Some(sum)
}

fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .context("bad PAX record")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .context("bad PAX record length")?;
        if len <= sp + 1 || len > rest.len() {
            bail!("bad PAX record length");
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .context("bad PAX record")?;
        out.push((
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            rec[eq + 1..].to_vec(),
        ));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Streaming reader of raw tar members.
pub struct Scanner<R> {
    r: R,
    pending_data: u64,
    pub bytes_read: u64,
    done: bool,
}

impl<R: Read> Scanner<R> {
    pub fn new(r: R) -> Self {
        Scanner {
            r,
            pending_data: 0,
            bytes_read: 0,
            done: false,
        }
    }

    fn read_block(&mut self, buf: &mut [u8; BLOCK]) -> Result<bool> {
        let mut got = 0;
        while got < BLOCK {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading the tar stream"),
            }
        }
        self.bytes_read += got as u64;
        match got {
            0 => Ok(false),
            BLOCK => Ok(true),
            _ => bail!("the tar stream ends in the middle of a record (truncated)"),
        }
    }

    fn read_data(&mut self, len: u64) -> Result<Vec<u8>> {
        if len > 64 << 20 {
            bail!("a tar metadata record claims {len} bytes");
        }
        let padded = (len as usize).div_ceil(BLOCK) * BLOCK;
        let mut v = vec![0u8; padded];
        self.r
            .read_exact(&mut v)
            .context("the tar stream is truncated inside a metadata record")?;
        self.bytes_read += padded as u64;
        v.truncate(len as usize);
        Ok(v)
    }

    /// Next member; its data must be consumed with `copy_data` or `skip_data`.
    pub fn next_member(&mut self) -> Result<Option<Member>> {
        if self.pending_data > 0 {
            self.skip_data()?;
        }
        if self.done {
            return Ok(None);
        }
        let mut headers = Vec::new();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut long_name: Option<String> = None;
        let mut long_link: Option<String> = None;
        let mut blk = [0u8; BLOCK];
        loop {
            if !self.read_block(&mut blk)? {
                if headers.is_empty() {
                    // EOF without the end marker: GNU tar accepts this, so do we.
                    self.done = true;
                    return Ok(None);
                }
                bail!("the tar stream is truncated after a header");
            }
            if blk.iter().all(|&b| b == 0) {
                if headers.is_empty() {
                    self.done = true;
                    return Ok(None);
                }
                bail!("a tar header is followed by an end-of-archive block");
            }
            if !checksum_ok(&blk) {
                bail!(
                    "not a tar archive: bad header checksum at byte {}",
                    self.bytes_read - BLOCK as u64
                );
            }
            let typeflag = blk[156];
            let size = octal(&blk[124..136]).context("bad size field in a tar header")?;
            match typeflag {
                b'x' | b'L' | b'K' => {
                    headers.extend_from_slice(&blk);
                    let data = self.read_data(size)?;
                    let padded = (data.len()).div_ceil(BLOCK) * BLOCK;
                    let mut raw = data.clone();
                    raw.resize(padded, 0);
                    headers.extend_from_slice(&raw);
                    match typeflag {
                        b'x' => pax.extend(parse_pax(&data)?),
                        b'L' => long_name = Some(cstr(&data)),
                        _ => long_link = Some(cstr(&data)),
                    }
                }
                b'g' => {
                    // Global PAX headers apply to what follows: keep them in place.
                    headers.extend_from_slice(&blk);
                    let data = self.read_data(size)?;
                    let mut raw = data.clone();
                    raw.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
                    headers.extend_from_slice(&raw);
                }
                _ => {
                    let main_at = headers.len();
                    headers.extend_from_slice(&blk);
                    // Old GNU sparse: extension headers follow the main one.
                    if typeflag == b'S' && blk[482] != 0 {
                        let mut ext = [0u8; BLOCK];
                        loop {
                            if !self.read_block(&mut ext)? {
                                bail!("the tar stream is truncated in a sparse map");
                            }
                            headers.extend_from_slice(&ext);
                            if ext[504] == 0 {
                                break;
                            }
                        }
                    }
                    let ustar = &blk[257..263] == b"ustar\0";
                    let mut path = cstr(&blk[0..100]);
                    if ustar && blk[345] != 0 {
                        path = format!("{}/{}", cstr(&blk[345..500]), path);
                    }
                    let mut data_len = size;
                    let mut link = Some(cstr(&blk[157..257])).filter(|s| !s.is_empty());
                    let mut xattrs = Vec::new();
                    let mut uid = octal(&blk[108..116]).unwrap_or(0);
                    let mut gid = octal(&blk[116..124]).unwrap_or(0);
                    if let Some(n) = long_name {
                        path = n;
                    }
                    if let Some(l) = long_link {
                        link = Some(l);
                    }
                    for (k, v) in pax {
                        let s = || String::from_utf8_lossy(&v).into_owned();
                        match k.as_str() {
                            "path" => path = s(),
                            "linkpath" => link = Some(s()),
                            "size" => data_len = s().parse().context("bad PAX size")?,
                            "uid" => uid = s().parse().context("bad PAX uid")?,
                            "gid" => gid = s().parse().context("bad PAX gid")?,
                            _ => {
                                if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                                    xattrs.push((name.to_string(), v));
                                }
                            }
                        }
                    }
                    let mode = octal(&blk[100..108]).unwrap_or(0) as u32 & 0o7777;
                    self.pending_data = data_len.div_ceil(BLOCK as u64) * BLOCK as u64;
                    return Ok(Some(Member {
                        path: normalize(&path),
                        typeflag,
                        data_len,
                        headers,
                        main_at,
                        link: link.map(|l| if typeflag == b'1' { normalize(&l) } else { l }),
                        xattrs,
                        mode,
                        uid,
                        gid,
                    }));
                }
            }
        }
    }

    /// Copies the current member's data (with padding) to `w`.
    pub fn copy_data(&mut self, w: &mut dyn Write) -> Result<()> {
        let n =
            io::copy(&mut (&mut self.r).take(self.pending_data), w).context("copying tar data")?;
        self.bytes_read += n;
        if n != self.pending_data {
            bail!("the tar stream is truncated inside a file's data");
        }
        self.pending_data = 0;
        Ok(())
    }

    pub fn skip_data(&mut self) -> Result<()> {
        self.copy_data(&mut io::sink())
    }
}

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

impl<R: Read + Seek> Scanner<R> {
    /// Skips the current member's data by seeking; `len` is the file size,
    /// since seeking past the end would hide a truncated archive.
    pub fn seek_skip(&mut self, len: u64) -> Result<()> {
        let pos = self
            .r
            .seek(SeekFrom::Current(self.pending_data as i64))
            .context("seeking in the tar file")?;
        if pos > len {
            bail!("the tar stream is truncated inside a file's data");
        }
        self.bytes_read += self.pending_data;
        self.pending_data = 0;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add =
            |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(kind);
                h.set_mode(mode);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(data.len() as u64);
                match link {
                    Some(l) => b.append_link(&mut h, path, l).expect("link"),
                    None => b.append_data(&mut h, path, data).expect("data"),
                }
            };
        add("./etc/", tar::EntryType::Directory, 0o755, b"", None);
        add(
            "./etc/hostname",
            tar::EntryType::Regular,
            0o644,
            b"base\n",
            None,
        );
        add(
            "./usr/bin/su",
            tar::EntryType::Regular,
            0o4755,
            b"ELF",
            None,
        );
        add(
            "./usr/bin/su2",
            tar::EntryType::Link,
            0o644,
            b"",
            Some("./usr/bin/su"),
        );
        let long = format!("./d/{}", "x".repeat(150));
        add(&long, tar::EntryType::Regular, 0o600, b"long", None);
        b.into_inner().expect("tar")
    }

    #[test]
    fn scan_counts_and_normalizes() {
        let st = scan(&sample()[..]).expect("scan");
        // 5 entries plus the parents the sample leaves out: usr, usr/bin, d.
        assert_eq!(st.members, 8);
        assert_eq!(st.inodes, 7);
        assert!(st.dirs.contains("usr/bin") && st.dirs.contains("etc"));
    }

    #[test]
    fn merge_replaces_passes_through_and_fixes_hardlink_mode() {
        let extras = vec![
            Extra {
                path: "etc/hostname".into(),
                kind: ExtraKind::File(b"overlay\n".to_vec()),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
            Extra {
                path: "etc/hc".into(),
                kind: ExtraKind::Dir,
                mode: 0o700,
                uid: 0,
                gid: 0,
            },
        ];
        let mut out = Vec::new();
        merge(&sample()[..], &extras, 42, &mut out).expect("merge");
        let mut ar = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let p = e.path().expect("path").to_string_lossy().into_owned();
            let mode = e.header().mode().expect("mode");
            let mut data = String::new();
            e.read_to_string(&mut data).expect("read");
            seen.push((normalize(&p), mode, data));
        }
        let hostname: Vec<_> = seen.iter().filter(|s| s.0 == "etc/hostname").collect();
        assert_eq!(hostname.len(), 1);
        assert_eq!(hostname[0].2, "overlay\n");
        let su2 = seen
            .iter()
            .find(|s| s.0 == "usr/bin/su2")
            .expect("hard link kept");
        assert_eq!(su2.1, 0o4755);
        assert!(seen.iter().any(|s| s.0.len() > 150 && s.2 == "long"));
        assert!(seen.iter().any(|s| s.0 == "etc/hc" && s.1 == 0o700));
    }

    #[test]
    fn missing_parents_are_synthesized() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        let deep = format!("a/{}/f", "b".repeat(120));
        b.append_data(&mut h, &deep, &b"x"[..]).expect("append");
        let t = b.into_inner().expect("tar");
        let mut out = Vec::new();
        merge(&t[..], &[], 7, &mut out).expect("merge");
        let mut ar = tar::Archive::new(&out[..]);
        let names: Vec<String> = ar
            .entries()
            .expect("entries")
            .map(|e| normalize(&e.expect("entry").path().expect("path").to_string_lossy()))
            .collect();
        assert_eq!(names, ["a", &format!("a/{}", "b".repeat(120)), &deep]);
    }

    #[test]
    fn seek_scan_agrees_and_catches_truncation() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = sample();
        let p = d.path().join("t.tar");
        std::fs::write(&p, &t).expect("write");
        let a = scan_file(std::fs::File::open(&p).expect("open")).expect("scan");
        assert_eq!(a.members, scan(&t[..]).expect("scan").members);
        // Cut inside the last file's data, after its header.
        std::fs::write(&p, &t[..t.len() - 1024 - 300]).expect("write");
        assert!(scan_file(std::fs::File::open(&p).expect("open")).is_err());
    }

    #[test]
    fn truncated_and_garbage_input_fail() {
        let t = sample();
        assert!(scan(&t[..t.len() / 2 + 100]).is_err());
        assert!(
            scan(&b"this is not a tar archive at all, just some text that goes on"[..]).is_err()
        );
        assert!(scan(&[][..]).is_err());
    }
}
