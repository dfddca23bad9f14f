// SPDX-License-Identifier: Apache-2.0
//! Root filesystem tarball fixture: a small, deterministic rootfs that carries
//! every kind of metadata an ext4 writer must preserve (ownership, special
//! modes, links, device nodes, xattrs, long and non-ASCII names, sparse data).
//!
//! Every header is built by hand so nothing leaks from the host (the tests run
//! as root, whose files would otherwise all look alike).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context};
use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};

use crate::{pattern_bytes, sha256_file, sha256_hex};

/// mtime of every entry in the tarball.
pub const FIXTURE_MTIME: u64 = 1_700_000_000;
/// Directory holding [`BIG_DIR_COUNT`] small files (forces htree directories).
pub const BIG_DIR: &str = "/big";
/// Number of files in [`BIG_DIR`], named `f0000` .. `f4999`.
pub const BIG_DIR_COUNT: usize = 5000;
/// The sparse file.
pub const SPARSE_PATH: &str = "/var/sparse.bin";
/// Apparent size of [`SPARSE_PATH`].
pub const SPARSE_SIZE: u64 = 64 << 20;
/// Data chunks of [`SPARSE_PATH`] as (offset, length); the rest is holes.
pub const SPARSE_DATA: [(u64, u64); 2] = [(0, 4096), (32 << 20, 4096)];
/// The file carrying `security.capability` (cap_net_raw+ep).
pub const CAP_PATH: &str = "/usr/bin/ping-fixture";
/// The file carrying the `user.hc-test` xattr.
pub const USER_XATTR_PATH: &str = "/etc/xattr-file";
/// Name and value of the user xattr on [`USER_XATTR_PATH`].
pub const USER_XATTR: (&str, &[u8]) = ("user.hc-test", b"fixture-value");
/// Path with a non-ASCII name (stored as raw UTF-8 in the ustar header).
pub const NON_ASCII_PATH: &str = "/etc/grüße-日本語.txt";

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink {
        target: String,
    },
    Char {
        maj: u32,
        min: u32,
    },
    Block {
        maj: u32,
        min: u32,
    },
    Fifo,
    /// A tar hard-link entry; `to` is the absolute path of the first name.
    HardLink {
        to: String,
    },
}

/// Expected facts about one path once the tarball is unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// Absolute path inside the root filesystem (`/` for the root).
    pub path: String,
    pub kind: Kind,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    /// File: content length (apparent size for the sparse file). HardLink:
    /// the target's. Symlink: target length. Others: 0.
    pub size: u64,
    /// Lower-case hex SHA-256 of the content for File and HardLink.
    pub sha256: Option<String>,
    pub mtime: u64,
}

/// How the sparse file was encoded in the tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseEncoding {
    /// Old GNU sparse entry (type `S`, map in the GNU header): the `tar`
    /// crate reads it, but only writes it from on-disk files, so the header
    /// is built by hand.
    GnuOld,
    /// Plain regular entry with the holes written out as zeros.
    Regular,
}

/// Everything the tests need to know about the fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsFacts {
    /// Every path in tar order (parents first), including `/` and all of
    /// [`BIG_DIR`]'s files.
    pub entries: Vec<Expect>,
    /// (path, xattr name, value) for every xattr in the tarball.
    pub xattrs: Vec<(String, String, Vec<u8>)>,
    pub sparse_path: String,
    pub sparse_encoding: SparseEncoding,
    pub sparse_size: u64,
    /// (offset, length) of the data regions of the sparse file.
    pub sparse_data: Vec<(u64, u64)>,
    pub big_dir: String,
    pub big_dir_count: usize,
    /// Sum of apparent sizes of regular files (hard links counted once).
    pub total_content_bytes: u64,
    /// Like `total_content_bytes` but without the sparse file's holes.
    pub total_stored_bytes: u64,
    /// File whose 200-character name needs a PAX `path` record.
    pub long_name_path: String,
    pub non_ascii_path: String,
    /// Path over 100 bytes stored with the ustar prefix/name split.
    pub prefix_split_path: String,
    /// Path over 255 bytes in nested directories: needs a PAX `path` record.
    pub deep_path: String,
    /// Symlink whose target is over 100 bytes (PAX `linkpath`, slow symlink).
    pub long_symlink_path: String,
    /// SHA-256 of the tarball written.
    pub tar_sha256: String,
}

impl RootfsFacts {
    /// The entry for `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Expect> {
        self.entries.iter().find(|e| e.path == path)
    }

    /// All xattrs expected on `path`.
    pub fn xattrs_of(&self, path: &str) -> Vec<(&str, &[u8])> {
        self.xattrs
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, n, v)| (n.as_str(), v.as_slice()))
            .collect()
    }
}

/// A v2 `security.capability` blob granting cap_net_raw (bit 13) in the
/// permitted set with the effective flag: `cap_net_raw+ep`.
pub fn capability_net_raw() -> Vec<u8> {
    const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
    const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x1;
    const CAP_NET_RAW: u32 = 13;
    let mut blob = Vec::with_capacity(20);
    blob.extend_from_slice(&(VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE).to_le_bytes());
    blob.extend_from_slice(&(1u32 << CAP_NET_RAW).to_le_bytes()); // permitted[0]
    blob.extend_from_slice(&0u32.to_le_bytes()); // inheritable[0]
    blob.extend_from_slice(&0u32.to_le_bytes()); // permitted[1]
    blob.extend_from_slice(&0u32.to_le_bytes()); // inheritable[1]
    blob
}

enum Body {
    None,
    Bytes(Vec<u8>),
    /// Data chunks (offset, bytes) of a sparse file.
    Sparse(Vec<(u64, Vec<u8>)>),
}

struct Node {
    expect: Expect,
    body: Body,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Collects nodes in tar order and derives the facts from the same list.
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn push(&mut self, path: &str, kind: Kind, owner: (u32, u32), mode: u32, body: Body) {
        let (size, sha256) = match (&kind, &body) {
            (Kind::Symlink { target }, _) => (target.len() as u64, None),
            (_, Body::Bytes(b)) => (b.len() as u64, Some(sha256_hex(b))),
            (_, Body::Sparse(chunks)) => (SPARSE_SIZE, Some(sparse_sha256(chunks))),
            _ => (0, None),
        };
        self.nodes.push(Node {
            expect: Expect {
                path: path.to_owned(),
                kind,
                uid: owner.0,
                gid: owner.1,
                mode,
                size,
                sha256,
                mtime: FIXTURE_MTIME,
            },
            body,
            xattrs: Vec::new(),
        });
    }

    fn dir(&mut self, path: &str, owner: (u32, u32), mode: u32) {
        self.push(path, Kind::Dir, owner, mode, Body::None);
    }

    fn file(&mut self, path: &str, owner: (u32, u32), mode: u32, data: impl Into<Vec<u8>>) {
        self.push(path, Kind::File, owner, mode, Body::Bytes(data.into()));
    }

    fn symlink(&mut self, path: &str, target: &str) {
        let kind = Kind::Symlink {
            target: target.to_owned(),
        };
        self.push(path, kind, ROOT, 0o777, Body::None);
    }

    fn hardlink(&mut self, path: &str, to: &str) -> anyhow::Result<()> {
        let target = self
            .nodes
            .iter()
            .find(|n| n.expect.path == to)
            .with_context(|| format!("hard link target {to} not yet added"))?;
        let mut expect = target.expect.clone();
        expect.path = path.to_owned();
        expect.kind = Kind::HardLink { to: to.to_owned() };
        self.nodes.push(Node {
            expect,
            body: Body::None,
            xattrs: Vec::new(),
        });
        Ok(())
    }

    fn xattr(&mut self, name: &str, value: &[u8]) -> anyhow::Result<()> {
        let node = self.nodes.last_mut().context("xattr before any node")?;
        node.xattrs.push((name.to_owned(), value.to_vec()));
        Ok(())
    }
}

const ROOT: (u32, u32) = (0, 0);

fn sparse_sha256(chunks: &[(u64, Vec<u8>)]) -> String {
    let mut hasher = Sha256::new();
    let zeros = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let zero_fill = |hasher: &mut Sha256, mut n: u64| {
        while n > 0 {
            let step = n.min(zeros.len() as u64);
            hasher.update(&zeros[..step as usize]);
            n -= step;
        }
    };
    for (off, data) in chunks {
        zero_fill(&mut hasher, off - pos);
        hasher.update(data);
        pos = off + data.len() as u64;
    }
    zero_fill(&mut hasher, SPARSE_SIZE - pos);
    hex::encode(hasher.finalize())
}

fn build_tree() -> anyhow::Result<Tree> {
    let mut t = Tree { nodes: Vec::new() };
    let long_name = long_file_name();

    t.dir("/", ROOT, 0o755);
    t.dir("/big", ROOT, 0o755);
    t.dir("/boot", ROOT, 0o755);
    t.dir("/dev", ROOT, 0o755);
    t.dir("/etc", ROOT, 0o755);
    t.dir("/tmp", ROOT, 0o1777);
    t.dir("/usr", ROOT, 0o755);
    t.dir("/usr/bin", ROOT, 0o755);
    t.dir("/usr/lib", ROOT, 0o755);
    t.dir("/usr/lib/hc-fixture", ROOT, 0o755);
    t.dir("/usr/share", ROOT, 0o755);
    t.dir("/var", ROOT, 0o755);
    t.dir("/var/lib", ROOT, 0o755);
    t.dir("/var/lib/app", (1000, 1000), 0o750);

    t.file("/etc/hostname", ROOT, 0o644, "hc-fixture\n");
    t.file("/etc/empty", ROOT, 0o644, "");
    t.file(
        "/etc/www-data.conf",
        (33, 33),
        0o640,
        "# owned by www-data, not world-readable\nlisten = 8080\n",
    );
    t.file(USER_XATTR_PATH, ROOT, 0o644, "has a user xattr\n");
    t.xattr(USER_XATTR.0, USER_XATTR.1)?;
    t.file(NON_ASCII_PATH, ROOT, 0o644, "Grüße, 日本語\n");
    t.file(&format!("/etc/{long_name}"), ROOT, 0o644, "long name\n");

    t.file(
        "/usr/bin/su-fixture",
        ROOT,
        0o4755,
        "\x7fELF not really: setuid fixture\n",
    );
    t.file(
        "/usr/bin/sgid-fixture",
        (0, 42),
        0o2755,
        "\x7fELF not really: setgid fixture\n",
    );
    t.file(CAP_PATH, ROOT, 0o755, "\x7fELF not really: ping fixture\n");
    t.xattr("security.capability", &capability_net_raw())?;
    t.symlink("/usr/bin/link", "su-fixture");
    t.symlink("/usr/bin/abs-link", "/etc/hostname");
    t.symlink("/usr/bin/long-link", &format!("/etc/{long_name}"));
    t.hardlink("/usr/bin/hard", "/usr/bin/su-fixture")?;

    // Sizes around block boundaries plus a multi-block incompressible blob.
    t.file("/usr/lib/hc-fixture/one-byte", ROOT, 0o644, "x");
    t.file(
        "/usr/lib/hc-fixture/page-4096",
        ROOT,
        0o644,
        pattern_bytes(4096, 4096),
    );
    t.file(
        "/usr/lib/hc-fixture/page-4097",
        ROOT,
        0o644,
        pattern_bytes(4097, 4097),
    );
    t.file(
        "/usr/lib/hc-fixture/blob.bin",
        ROOT,
        0o644,
        pattern_bytes(300, 300 << 10),
    );

    t.file(
        "/var/lib/app/state.json",
        (1000, 1000),
        0o600,
        "{\"fixture\":true}\n",
    );

    t.push(
        "/dev/null-fixture",
        Kind::Char { maj: 1, min: 3 },
        ROOT,
        0o666,
        Body::None,
    );
    t.push(
        "/dev/blk-fixture",
        Kind::Block { maj: 8, min: 0 },
        (0, 6),
        0o660,
        Body::None,
    );
    t.push("/var/fifo-fixture", Kind::Fifo, ROOT, 0o600, Body::None);

    let chunks = SPARSE_DATA
        .iter()
        .map(|&(off, len)| (off, pattern_bytes(off ^ 0x5eed, len as usize)))
        .collect();
    t.push(SPARSE_PATH, Kind::File, ROOT, 0o644, Body::Sparse(chunks));

    // Nested directories: one path that fits ustar's prefix/name split and
    // one that is too long for it.
    let mut dir = String::from("/usr/share");
    for comp in PREFIX_SPLIT_DIRS {
        dir = format!("{dir}/{comp}");
        t.dir(&dir, ROOT, 0o755);
    }
    t.file(
        &format!("{dir}/{PREFIX_SPLIT_FILE}"),
        ROOT,
        0o644,
        "split\n",
    );
    for comp in DEEP_DIRS {
        dir = format!("{dir}/{comp}");
        t.dir(&dir, ROOT, 0o755);
    }
    t.file(&format!("{dir}/{DEEP_FILE}"), ROOT, 0o644, "deep\n");

    for i in 0..BIG_DIR_COUNT {
        t.file(
            &format!("{BIG_DIR}/f{i:04}"),
            ROOT,
            0o644,
            format!("big file {i:04}\n"),
        );
    }
    Ok(t)
}

const PREFIX_SPLIT_DIRS: [&str; 3] = [
    "hc-fixture-a-rather-long-directory-name",
    "second-level-directory-with-a-long-name",
    "third",
];
const PREFIX_SPLIT_FILE: &str = "file-beyond-one-hundred-bytes.txt";
const DEEP_DIRS: [&str; 3] = [
    "fourth-level-directory-pushing-the-path-well-past-the-ustar-prefix-limit",
    "fifth-level-directory-because-two-hundred-fifty-five-bytes-is-a-lot",
    "sixth",
];
const DEEP_FILE: &str = "deep-file.txt";

/// A 200-character file name (ext4 allows 255).
fn long_file_name() -> String {
    let mut name = String::from("long-name-");
    while name.len() < 196 {
        name.push(char::from(b'a' + (name.len() % 26) as u8));
    }
    name.push_str(".txt");
    name
}

/// Writes the rootfs tarball to `path` and returns what it contains.
/// The same call always produces byte-identical output.
pub fn write_rootfs_fixture(path: &Path) -> anyhow::Result<RootfsFacts> {
    let tree = build_tree()?;
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut builder = Builder::new(BufWriter::new(file));
    for node in &tree.nodes {
        append_node(&mut builder, node)
            .with_context(|| format!("writing tar entry {}", node.expect.path))?;
    }
    builder
        .into_inner()
        .context("finishing tar")?
        .into_inner()
        .map_err(|e| e.into_error())
        .context("flushing tar")?
        .sync_all()?;

    let mut facts = RootfsFacts {
        entries: tree.nodes.iter().map(|n| n.expect.clone()).collect(),
        xattrs: Vec::new(),
        sparse_path: SPARSE_PATH.to_owned(),
        sparse_encoding: SparseEncoding::GnuOld,
        sparse_size: SPARSE_SIZE,
        sparse_data: SPARSE_DATA.to_vec(),
        big_dir: BIG_DIR.to_owned(),
        big_dir_count: BIG_DIR_COUNT,
        total_content_bytes: 0,
        total_stored_bytes: 0,
        long_name_path: format!("/etc/{}", long_file_name()),
        non_ascii_path: NON_ASCII_PATH.to_owned(),
        prefix_split_path: format!(
            "/usr/share/{}/{PREFIX_SPLIT_FILE}",
            PREFIX_SPLIT_DIRS.join("/")
        ),
        deep_path: format!(
            "/usr/share/{}/{}/{DEEP_FILE}",
            PREFIX_SPLIT_DIRS.join("/"),
            DEEP_DIRS.join("/")
        ),
        long_symlink_path: "/usr/bin/long-link".to_owned(),
        tar_sha256: sha256_file(path)?,
    };
    for node in &tree.nodes {
        for (name, value) in &node.xattrs {
            facts
                .xattrs
                .push((node.expect.path.clone(), name.clone(), value.clone()));
        }
        match &node.body {
            Body::Bytes(b) => {
                facts.total_content_bytes += b.len() as u64;
                facts.total_stored_bytes += b.len() as u64;
            }
            Body::Sparse(chunks) => {
                facts.total_content_bytes += SPARSE_SIZE;
                facts.total_stored_bytes += chunks.iter().map(|c| c.1.len() as u64).sum::<u64>();
            }
            Body::None => {}
        }
    }
    // Self-check the invariants the tests rely on.
    ensure!(facts.prefix_split_path.len() > 100 && facts.prefix_split_path.len() < 255);
    ensure!(facts.deep_path.len() > 256);
    ensure!(facts.get(&facts.deep_path).is_some());
    ensure!(facts.get(&facts.long_name_path).is_some());
    Ok(facts)
}

/// Name as stored in the tarball: `./`-relative like `tar -C root -c .`,
/// directories with a trailing slash.
fn tar_name(e: &Expect) -> Vec<u8> {
    let mut name = format!(".{}", e.path);
    if e.kind == Kind::Dir && !name.ends_with('/') {
        name.push('/');
    }
    name.into_bytes()
}

fn put_bytes(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
}

/// Stores `name` in ustar name/prefix; false if it does not fit.
fn set_ustar_name(header: &mut Header, name: &[u8]) -> anyhow::Result<bool> {
    let ustar = header.as_ustar_mut().context("not a ustar header")?;
    if name.len() <= ustar.name.len() {
        put_bytes(&mut ustar.name, name);
        put_bytes(&mut ustar.prefix, b"");
        return Ok(true);
    }
    // Split at a slash so that prefix <= 155 and the rest <= 100 bytes.
    let split = name
        .iter()
        .enumerate()
        .filter(|&(i, &b)| {
            b == b'/' && i <= ustar.prefix.len() && name.len() - i - 1 <= ustar.name.len()
        })
        .map(|(i, _)| i)
        .find(|&i| i + 1 < name.len());
    match split {
        Some(i) => {
            put_bytes(&mut ustar.prefix, &name[..i]);
            put_bytes(&mut ustar.name, &name[i + 1..]);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Truncates `s` to at most `max` bytes on a char boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        // "LEN KEY=VALUE\n" where LEN counts its own digits.
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while rest + len.to_string().len() != len {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

fn append_pax<W: Write>(
    builder: &mut Builder<W>,
    e: &Expect,
    records: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    let data = pax_records(records);
    let base = e.path.rsplit('/').next().unwrap_or_default();
    let name = format!("./PaxHeaders/{base}");
    let mut header = Header::new_ustar();
    put_bytes(
        &mut header.as_old_mut().name,
        truncate_utf8(&name, 100).as_bytes(),
    );
    header.set_entry_type(EntryType::XHeader);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(FIXTURE_MTIME);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data.as_slice())?;
    Ok(())
}

fn append_node<W: Write>(builder: &mut Builder<W>, node: &Node) -> anyhow::Result<()> {
    let e = &node.expect;
    if let Body::Sparse(chunks) = &node.body {
        ensure!(node.xattrs.is_empty(), "xattrs on a sparse entry");
        return append_sparse(builder, e, chunks);
    }

    let name = tar_name(e);
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    let mut header = Header::new_ustar();
    if !set_ustar_name(&mut header, &name)? {
        records.push(("path".to_owned(), name.clone()));
        // Readers without PAX support still see something sensible.
        let base = e.path.rsplit('/').next().unwrap_or_default();
        put_bytes(
            &mut header.as_old_mut().name,
            truncate_utf8(base, 100).as_bytes(),
        );
    }
    let link: Option<Vec<u8>> = match &e.kind {
        Kind::Symlink { target } => Some(target.clone().into_bytes()),
        Kind::HardLink { to } => Some(format!(".{to}").into_bytes()),
        _ => None,
    };
    if let Some(link) = &link {
        if link.len() <= 100 {
            put_bytes(&mut header.as_old_mut().linkname, link);
        } else {
            records.push(("linkpath".to_owned(), link.clone()));
            put_bytes(&mut header.as_old_mut().linkname, &link[..100]);
        }
    }
    for (xname, value) in &node.xattrs {
        records.push((format!("SCHILY.xattr.{xname}"), value.clone()));
    }

    let (entry_type, data): (EntryType, &[u8]) = match (&e.kind, &node.body) {
        (Kind::File, Body::Bytes(b)) => (EntryType::Regular, b),
        (Kind::Dir, _) => (EntryType::Directory, &[]),
        (Kind::Symlink { .. }, _) => (EntryType::Symlink, &[]),
        (Kind::HardLink { .. }, _) => (EntryType::Link, &[]),
        (Kind::Char { .. }, _) => (EntryType::Char, &[]),
        (Kind::Block { .. }, _) => (EntryType::Block, &[]),
        (Kind::Fifo, _) => (EntryType::Fifo, &[]),
        (Kind::File, _) => bail!("file without bytes"),
    };
    header.set_entry_type(entry_type);
    header.set_mode(e.mode);
    header.set_uid(e.uid.into());
    header.set_gid(e.gid.into());
    header.set_mtime(e.mtime);
    header.set_size(data.len() as u64);
    // ustar has device fields on every entry; zero them like GNU tar does.
    let (maj, min) = match e.kind {
        Kind::Char { maj, min } | Kind::Block { maj, min } => (maj, min),
        _ => (0, 0),
    };
    header.set_device_major(maj)?;
    header.set_device_minor(min)?;
    header.set_cksum();

    if !records.is_empty() {
        append_pax(builder, e, &records)?;
    }
    builder.append(&header, data)?;
    Ok(())
}

/// Old GNU sparse entry: map of (offset, length) in the header, followed by
/// only the data chunks; a final zero-length chunk at EOF marks the size.
fn append_sparse<W: Write>(
    builder: &mut Builder<W>,
    e: &Expect,
    chunks: &[(u64, Vec<u8>)],
) -> anyhow::Result<()> {
    let mut header = Header::new_gnu();
    let name = tar_name(e);
    ensure!(name.len() <= 100, "sparse entry name too long");
    put_bytes(&mut header.as_old_mut().name, &name);
    header.set_entry_type(EntryType::GNUSparse);
    header.set_mode(e.mode);
    header.set_uid(e.uid.into());
    header.set_gid(e.gid.into());
    header.set_mtime(e.mtime);
    let stored: u64 = chunks.iter().map(|c| c.1.len() as u64).sum();
    header.set_size(stored);
    let gnu = header.as_gnu_mut().context("not a GNU header")?;
    gnu.set_real_size(SPARSE_SIZE);
    let map: Vec<(u64, u64)> = chunks
        .iter()
        .map(|(off, d)| (*off, d.len() as u64))
        .chain([(SPARSE_SIZE, 0)])
        .collect();
    ensure!(map.len() <= gnu.sparse.len(), "sparse map needs extension");
    for ((off, len), slot) in map.iter().zip(gnu.sparse.iter_mut()) {
        // The map is only valid if each chunk is 512-byte aligned in the tar.
        ensure!(len % 512 == 0 || *off == SPARSE_SIZE);
        slot.set_offset(*off);
        slot.set_length(*len);
    }
    gnu.set_is_extended(false);
    header.set_cksum();
    let mut data: Box<dyn Read + '_> = Box::new(std::io::empty());
    for (_, chunk) in chunks {
        data = Box::new(data.chain(chunk.as_slice()));
    }
    builder.append(&header, data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;
    use crate::{command, run};

    fn write_tmp() -> (tempfile::TempDir, PathBuf, RootfsFacts) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = dir.path().join("rootfs.tar");
        let facts = write_rootfs_fixture(&tar).expect("write fixture");
        (dir, tar, facts)
    }

    #[test]
    fn deterministic() {
        let (_d1, _t1, a) = write_tmp();
        let (_d2, _t2, b) = write_tmp();
        assert_eq!(a.tar_sha256, b.tar_sha256);
        assert_eq!(a, b);
    }

    #[test]
    fn capability_blob_layout() {
        let cap = capability_net_raw();
        assert_eq!(cap.len(), 20);
        assert_eq!(&cap[..4], &[0x01, 0x00, 0x00, 0x02]);
        assert_eq!(&cap[4..8], &[0x00, 0x20, 0x00, 0x00]);
    }

    /// The `tar` crate (what hc-image reads with) sees every fact.
    #[test]
    fn tar_crate_reads_facts() {
        let (_d, tar, facts) = write_tmp();
        let mut archive = tar::Archive::new(File::open(&tar).expect("open"));
        let mut seen = BTreeMap::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let raw = entry.path().expect("path").to_string_lossy().into_owned();
            let path = format!("/{}", raw.trim_start_matches("./").trim_end_matches('/'));
            let path = if path == "/." { "/".to_owned() } else { path };
            let h = entry.header().clone();
            let mut xattrs = Vec::new();
            if let Some(exts) = entry.pax_extensions().expect("pax") {
                for ext in exts {
                    let ext = ext.expect("pax ext");
                    if let Some(n) = ext.key().expect("key").strip_prefix("SCHILY.xattr.") {
                        xattrs.push((n.to_owned(), ext.value_bytes().to_vec()));
                    }
                }
            }
            let link = entry
                .link_name()
                .expect("link")
                .map(|l| l.to_string_lossy().into_owned());
            let mut hasher = Sha256::new();
            std::io::copy(&mut entry, &mut hasher).expect("read data");
            let sha = hex::encode(hasher.finalize());
            seen.insert(path, (h, link, xattrs, sha));
        }
        assert_eq!(seen.len(), facts.entries.len());
        for e in &facts.entries {
            let (h, link, _, sha) = seen.get(&e.path).unwrap_or_else(|| panic!("{}", e.path));
            assert_eq!(h.mode().expect("mode"), e.mode, "{}", e.path);
            assert_eq!(h.uid().expect("uid"), u64::from(e.uid), "{}", e.path);
            assert_eq!(h.gid().expect("gid"), u64::from(e.gid), "{}", e.path);
            assert_eq!(h.mtime().expect("mtime"), FIXTURE_MTIME);
            match &e.kind {
                Kind::File => assert_eq!(Some(sha), e.sha256.as_ref(), "{}", e.path),
                Kind::Symlink { target } => assert_eq!(link.as_ref(), Some(target)),
                Kind::HardLink { to } => {
                    assert_eq!(link.as_deref(), Some(format!(".{to}").as_str()))
                }
                Kind::Char { maj, min } | Kind::Block { maj, min } => {
                    assert_eq!(h.device_major().expect("maj"), Some(*maj));
                    assert_eq!(h.device_minor().expect("min"), Some(*min));
                }
                Kind::Dir | Kind::Fifo => {}
            }
        }
        let (h, ..) = &seen[SPARSE_PATH];
        assert_eq!(h.entry_type(), EntryType::GNUSparse);
        for (path, name, value) in &facts.xattrs {
            let (_, _, xattrs, _) = &seen[path];
            assert!(
                xattrs.contains(&(name.clone(), value.clone())),
                "{path} {name}"
            );
        }
    }

    /// GNU tar agrees on names, types, owners, xattrs and the sparse file.
    #[test]
    fn gnu_tar_lists_fixture() {
        let (dir, tar, facts) = write_tmp();
        let listing = run(command("tar")
            .expect("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-tvvf"])
            .arg(&tar))
        .expect("tar -t");
        // Column widths vary; compare with whitespace collapsed.
        let listing: Vec<String> = listing
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let has = |needle: &str| listing.iter().any(|l| l.contains(needle));
        let line_of = |path: &str| {
            listing
                .iter()
                .position(|l| l.ends_with(&format!(".{path}")) || l.contains(&format!(".{path} ")))
                .unwrap_or_else(|| panic!("{path} not listed"))
        };
        assert!(has(
            "-rwsr-xr-x 0/0 32 2023-11-14 22:13 ./usr/bin/su-fixture"
        ));
        assert!(has("drwxrwxrwt 0/0 0 2023-11-14 22:13 ./tmp/"));
        assert!(has(
            "drwxr-x--- 1000/1000 0 2023-11-14 22:13 ./var/lib/app/"
        ));
        assert!(has(
            "-rw-r----- 33/33 54 2023-11-14 22:13 ./etc/www-data.conf"
        ));
        assert!(has(
            "-rwxr-sr-x 0/42 32 2023-11-14 22:13 ./usr/bin/sgid-fixture"
        ));
        assert!(has(
            "crw-rw-rw- 0/0 1,3 2023-11-14 22:13 ./dev/null-fixture"
        ));
        assert!(has("brw-rw---- 0/6 8,0 2023-11-14 22:13 ./dev/blk-fixture"));
        assert!(has("prw------- 0/0 0 2023-11-14 22:13 ./var/fifo-fixture"));
        assert!(has("./usr/bin/hard link to ./usr/bin/su-fixture"));
        assert!(has("./usr/bin/link -> su-fixture"));
        assert!(has("./usr/bin/abs-link -> /etc/hostname"));
        assert!(has(&format!(
            "./usr/bin/long-link -> {}",
            facts.long_name_path
        )));
        assert!(has(
            "-rw-r--r-- 0/0 67108864 2023-11-14 22:13 ./var/sparse.bin"
        ));
        for path in [
            &facts.long_name_path,
            &facts.deep_path,
            &facts.non_ascii_path,
        ] {
            line_of(path);
        }
        let cap = line_of(CAP_PATH);
        assert_eq!(listing[cap + 1], "x: 20 security.capability");
        let user = line_of(USER_XATTR_PATH);
        assert_eq!(listing[user + 1], "x: 13 user.hc-test");

        // Extraction round-trips the sparse content and xattrs.
        let out = dir.path().join("x");
        std::fs::create_dir(&out).expect("mkdir");
        run(command("tar")
            .expect("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(&tar)
            .arg("-C")
            .arg(&out))
        .expect("tar -x");
        let sparse = out.join(SPARSE_PATH.trim_start_matches('/'));
        let expect = facts.get(SPARSE_PATH).expect("sparse fact");
        assert_eq!(
            sha256_file(&sparse).expect("hash").as_str(),
            expect.sha256.as_deref().expect("sha")
        );
    }

    /// `debugfs -R stat` output for each command in one debugfs run.
    fn debugfs_stats(img: &Path, paths: &[&str]) -> BTreeMap<String, String> {
        let cmds: String = paths.iter().map(|p| format!("stat \"{p}\"\n")).collect();
        let cmdfile = img.with_extension("cmds");
        std::fs::write(&cmdfile, cmds).expect("write cmds");
        let out = run(command("debugfs")
            .expect("debugfs")
            .arg("-f")
            .arg(&cmdfile)
            .arg(img))
        .expect("debugfs");
        let mut map = BTreeMap::new();
        for chunk in out.split("debugfs: stat \"").skip(1) {
            let (path, rest) = chunk.split_once('"').expect("quoted path");
            map.insert(path.to_owned(), rest.to_owned());
        }
        map
    }

    fn field<'a>(stat: &'a str, key: &str) -> &'a str {
        let start = stat.find(key).unwrap_or_else(|| panic!("{key} in {stat}")) + key.len();
        stat[start..]
            .split_whitespace()
            .next()
            .expect("field value")
    }

    /// mke2fs -d accepts the tarball and the result is clean, carrying the
    /// facts (e2fsprogs is the reference ext4 writer here).
    #[test]
    fn mke2fs_accepts_fixture() {
        let (dir, tar, facts) = write_tmp();
        let img = dir.path().join("rootfs.img");
        run(command("mke2fs")
            .expect("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
            .arg(&tar)
            .arg(&img)
            .arg("256M"))
        .expect("mke2fs -d");
        run(command("e2fsck").expect("e2fsck").arg("-fn").arg(&img)).expect("e2fsck clean");

        let mut paths: Vec<&str> = facts
            .entries
            .iter()
            .filter(|e| !e.path.starts_with("/big/"))
            .map(|e| e.path.as_str())
            .collect();
        paths.push("/big/f4999");
        let stats = debugfs_stats(&img, &paths);
        for path in &paths {
            let e = facts.get(path).expect("fact");
            let stat = stats
                .get(*path)
                .unwrap_or_else(|| panic!("no stat for {path}"));
            assert!(!stat.contains("File not found"), "{path}: {stat}");
            let mode = u32::from_str_radix(field(stat, "Mode:"), 8).expect("octal mode");
            assert_eq!(mode, e.mode, "{path} mode");
            assert_eq!(field(stat, "User:"), e.uid.to_string(), "{path} uid");
            assert_eq!(field(stat, "Group:"), e.gid.to_string(), "{path} gid");
            let ty = field(stat, "Type:");
            let want = match &e.kind {
                Kind::File | Kind::HardLink { .. } => "regular",
                Kind::Dir => "directory",
                Kind::Symlink { .. } => "symlink",
                Kind::Char { .. } => "character",
                Kind::Block { .. } => "block",
                Kind::Fifo => "FIFO",
            };
            assert_eq!(ty, want, "{path} type");
            if matches!(e.kind, Kind::File | Kind::Symlink { .. }) {
                assert_eq!(field(stat, "Size:"), e.size.to_string(), "{path} size");
            }
        }
        let su = &stats["/usr/bin/su-fixture"];
        assert_eq!(field(su, "Links:"), "2", "hard link shares the inode");
        assert!(
            stats["/dev/null-fixture"].contains("Device major/minor number: 01:03"),
            "{}",
            stats["/dev/null-fixture"]
        );
        assert!(stats["/usr/bin/link"].contains("Fast link dest: \"su-fixture\""));
        // Only the two data chunks are allocated.
        assert_eq!(field(&stats[SPARSE_PATH], "Blockcount:"), "16");
        // mke2fs copies only security.capability from tarballs (so not
        // user.hc-test); check the capability survived byte for byte.
        let cap_hex: Vec<String> = capability_net_raw()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let want = format!("security.capability (20) = {} ", cap_hex.join(" "));
        assert!(stats[CAP_PATH].contains(&want), "{}", stats[CAP_PATH]);

        let cat = |p: &str| {
            let out = Command::new(crate::tool("debugfs").expect("debugfs"))
                .arg("-R")
                .arg(format!("cat \"{p}\""))
                .arg(&img)
                .output()
                .expect("debugfs cat");
            sha256_hex(&out.stdout)
        };
        for p in [
            "/usr/lib/hc-fixture/blob.bin",
            "/usr/bin/hard",
            NON_ASCII_PATH,
            &facts.deep_path,
        ] {
            assert_eq!(
                Some(cat(p)),
                facts.get(p).and_then(|e| e.sha256.clone()),
                "{p}"
            );
        }
        let ls = run(command("debugfs")
            .expect("debugfs")
            .arg("-R")
            .arg(format!("ls -p {BIG_DIR}"))
            .arg(&img))
        .expect("ls");
        assert_eq!(
            ls.lines().filter(|l| l.contains("/f")).count(),
            BIG_DIR_COUNT
        );
    }
}
