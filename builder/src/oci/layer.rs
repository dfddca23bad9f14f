// SPDX-License-Identifier: Apache-2.0
//! Layers: one per Debian package (shared by every image that has the
//! package, by digest), a root layer per architecture and a config layer
//! per image. Tar headers are normalised (numeric owners, no names, the
//! package's own mtimes), so the same .deb always gives the same digest.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::recipe::{parse_mode, Recipe};
use crate::blobs::data_tar;
use crate::spec::Arch;

/// Bumped when the layer bytes made from a .deb change.
pub const LAYER_FORMAT: u32 = 2;

/// A finished layer: its compressed bytes and the digests the image names.
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    /// sha256 of `blob` (the manifest's digest).
    pub digest: String,
    /// sha256 of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
    /// Newest mtime inside, seconds since the epoch.
    pub mtime: u64,
}

pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Compresses a layer tar. gzip, not zstd: the dockerd of Debian 12
/// (20.10) cannot load zstd layers. The gzip header carries no name and
/// no time, so the bytes depend on the tar alone.
pub fn finish(tar: Vec<u8>, mtime: u64) -> Result<Layer> {
    use std::io::Write;
    let diff_id = sha256(&tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).context("compressing a layer")?;
    let blob = gz.finish().context("compressing a layer")?;
    Ok(Layer {
        digest: sha256(&blob),
        diff_id,
        blob,
        mtime,
    })
}

/// Merged /usr (what Debian's usrmerge does on a system): `lib/x` is
/// `usr/lib/x`, and the top-level directories themselves are the root
/// layer's symlinks. None when the entry is one of those directories.
fn merged(path: &str) -> Option<String> {
    for top in ["bin", "sbin", "lib", "lib64", "libx32", "lib32"] {
        if path == top {
            return None;
        }
        if let Some(rest) = path.strip_prefix(top).and_then(|r| r.strip_prefix('/')) {
            return Some(format!("usr/{top}/{rest}"));
        }
    }
    Some(path.to_string())
}

/// Documentation a service never reads (the copyright files stay).
fn dropped(path: &str) -> bool {
    if let Some(rest) = path.strip_prefix("usr/share/doc/") {
        return rest.contains('/') && !rest.ends_with("/copyright");
    }
    ["usr/share/man/", "usr/share/info/", "usr/share/lintian/"]
        .iter()
        .any(|p| path.starts_with(p))
}

fn header(
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// The layer of one package: its data.tar, normalised.
pub fn from_deb(deb: &[u8]) -> Result<Layer> {
    from_debs(&[deb])
}

/// One layer of several packages, in the order given.
pub fn from_debs(debs: &[&[u8]]) -> Result<Layer> {
    let mut out = tar::Builder::new(Vec::new());
    let mut newest = 0;
    // dockerd refuses a layer that names a path twice; packages share
    // directories (the first package's entry stands) and, rarely, files.
    let mut seen = std::collections::HashSet::new();
    for deb in debs {
        newest = newest.max(append_deb(deb, &mut out, &mut seen)?);
    }
    finish(out.into_inner().context("finishing a layer")?, newest)
}

/// Appends a package's data.tar to `out`; returns its newest mtime.
fn append_deb(
    deb: &[u8],
    out: &mut tar::Builder<Vec<u8>>,
    seen: &mut std::collections::HashSet<String>,
) -> Result<u64> {
    let mut ar = tar::Archive::new(data_tar(deb)?);
    let mut newest = 0;
    for e in ar.entries().context("reading data.tar")? {
        let mut e = e.context("reading data.tar entry")?;
        let raw = e
            .path()
            .context("entry path")?
            .to_string_lossy()
            .into_owned();
        let p = raw.trim_start_matches("./").trim_end_matches('/');
        if p.is_empty() || dropped(p) {
            continue;
        }
        let Some(path) = merged(p) else { continue };
        if !seen.insert(path.clone()) {
            continue;
        }
        let h = e.header();
        let (mode, uid, gid, mtime) = (
            h.mode().context("mode")?,
            h.uid().context("uid")?,
            h.gid().context("gid")?,
            h.mtime().context("mtime")?,
        );
        newest = newest.max(mtime);
        let kind = h.entry_type();
        match kind {
            tar::EntryType::Directory => {
                let mut nh = header(kind, mode, uid, gid, mtime, 0);
                out.append_data(&mut nh, format!("{path}/"), std::io::empty())
                    .context("writing a directory")?;
            }
            tar::EntryType::Regular => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).context("reading a file")?;
                let mut nh = header(kind, mode, uid, gid, mtime, data.len() as u64);
                out.append_data(&mut nh, &path, &data[..])
                    .context("writing a file")?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e
                    .link_name()
                    .context("link target")?
                    .context("a link without a target")?
                    .to_string_lossy()
                    .into_owned();
                // A hard link names an archive path: merge it like the rest.
                let target = if kind == tar::EntryType::Link {
                    let t = target.trim_start_matches("./");
                    merged(t).unwrap_or_else(|| t.to_string())
                } else {
                    target
                };
                let mut nh = header(kind, mode, uid, gid, mtime, 0);
                out.append_link(&mut nh, &path, &target)
                    .context("writing a link")?;
            }
            // Device nodes and fifos have no place in a service image.
            _ => {}
        }
    }
    Ok(newest)
}

/// The bottom layer of every image of `arch`: merged-/usr links and the
/// directories every program expects.
pub fn root(arch: Arch) -> Result<Layer> {
    let mut out = tar::Builder::new(Vec::new());
    let mut links = vec![("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")];
    if arch == Arch::Amd64 {
        links.push(("lib64", "usr/lib64"));
    }
    for (dir, mode) in [
        ("etc", 0o755),
        ("root", 0o700),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/lib", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
        ("var/lib", 0o755),
        ("var/tmp", 0o1777),
    ] {
        let mut h = header(tar::EntryType::Directory, mode, 0, 0, 0, 0);
        out.append_data(&mut h, format!("{dir}/"), std::io::empty())
            .context("root layer")?;
    }
    if arch == Arch::Amd64 {
        let mut h = header(tar::EntryType::Directory, 0o755, 0, 0, 0, 0);
        out.append_data(&mut h, "usr/lib64/", std::io::empty())
            .context("root layer")?;
    }
    for (path, target) in links {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, 0, 0);
        out.append_link(&mut h, path, target)
            .context("root layer")?;
    }
    finish(out.into_inner().context("root layer")?, 0)
}

/// The top layer of one image: what the maintainer scripts would have
/// made (accounts, directories, links, files, the CA bundle).
/// `certs` are the packaged certificates for `ca_bundle`, by path.
pub fn config(r: &Recipe, certs: &BTreeMap<String, Vec<u8>>, mtime: u64) -> Result<Layer> {
    let uid = |name: &str| -> u64 {
        r.users
            .iter()
            .find(|u| u.name == name)
            .map_or(0, |u| u64::from(u.uid))
    };
    let gid = |name: &str| -> u64 {
        r.users
            .iter()
            .find(|u| u.name == name)
            .map_or(0, |u| u64::from(u.gid.unwrap_or(u.uid)))
    };
    let mut passwd = String::from("root:x:0:0:root:/root:/usr/sbin/nologin\n");
    let mut group = String::from("root:x:0:\n");
    for u in &r.users {
        let g = u.gid.unwrap_or(u.uid);
        passwd.push_str(&format!(
            "{}:x:{}:{g}::{}:/usr/sbin/nologin\n",
            u.name, u.uid, u.home
        ));
        group.push_str(&format!("{}:x:{g}:\n", u.name));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![
        ("etc/passwd".into(), passwd.into_bytes(), 0o644),
        ("etc/group".into(), group.into_bytes(), 0o644),
        (
            "etc/nsswitch.conf".into(),
            b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n".to_vec(),
            0o644,
        ),
    ];
    if r.ca_bundle {
        let mut bundle = Vec::new();
        for (_, pem) in certs.iter() {
            bundle.extend_from_slice(pem);
            if !bundle.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
        files.push(("etc/ssl/certs/ca-certificates.crt".into(), bundle, 0o644));
    }
    for f in &r.files {
        let mode = parse_mode(&f.mode).unwrap_or(0o644);
        files.push((
            f.path.trim_start_matches('/').into(),
            f.content.clone().into_bytes(),
            mode,
        ));
    }
    let mut out = tar::Builder::new(Vec::new());
    for (path, data, mode) in &files {
        let mut h = header(
            tar::EntryType::Regular,
            *mode,
            0,
            0,
            mtime,
            data.len() as u64,
        );
        out.append_data(&mut h, path, &data[..])
            .context("config layer")?;
    }
    for d in &r.dirs {
        let mode = parse_mode(&d.mode).unwrap_or(0o755);
        let mut h = header(
            tar::EntryType::Directory,
            mode,
            uid(&d.owner),
            gid(&d.owner),
            mtime,
            0,
        );
        out.append_data(
            &mut h,
            format!("{}/", d.path.trim_start_matches('/')),
            std::io::empty(),
        )
        .context("config layer")?;
    }
    for l in &r.links {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, mtime, 0);
        out.append_link(&mut h, l.path.trim_start_matches('/'), &l.target)
            .context("config layer")?;
    }
    finish(out.into_inner().context("config layer")?, mtime)
}

/// The packaged certificates of a ca-certificates .deb, by path.
pub fn certificates(deb: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut ar = tar::Archive::new(data_tar(deb)?);
    let mut out = BTreeMap::new();
    for e in ar.entries().context("reading data.tar")? {
        let mut e = e.context("reading data.tar entry")?;
        let p = e
            .path()
            .context("entry path")?
            .to_string_lossy()
            .into_owned();
        if p.contains("usr/share/ca-certificates/") && p.ends_with(".crt") {
            let mut data = Vec::new();
            e.read_to_end(&mut data).context("reading a certificate")?;
            out.insert(p, data);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(l: &Layer) -> Vec<(String, tar::EntryType, Option<String>)> {
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&l.blob[..])
            .read_to_end(&mut tar)
            .expect("gzip");
        assert_eq!(sha256(&tar), l.diff_id);
        let mut a = tar::Archive::new(&tar[..]);
        a.entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").to_string_lossy().into_owned(),
                    e.header().entry_type(),
                    e.link_name()
                        .expect("link")
                        .map(|l| l.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn merged_usr_and_dropped_docs() {
        assert_eq!(
            merged("lib/x86_64-linux-gnu/libc.so.6").as_deref(),
            Some("usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(merged("lib"), None);
        assert_eq!(merged("library/x").as_deref(), Some("library/x"));
        assert_eq!(merged("usr/bin/x").as_deref(), Some("usr/bin/x"));
        assert!(dropped("usr/share/doc/restic/changelog.gz"));
        assert!(!dropped("usr/share/doc/restic/copyright"));
        assert!(!dropped("usr/share/doc/restic"));
        assert!(dropped("usr/share/man/man1/restic.1.gz"));
    }

    #[test]
    fn a_deb_layer_is_normalised_and_reproducible() {
        let deb = crate::blobs::tests::fake_deb(&[
            ("bin/tool", b"#!/bin/sh\n"),
            ("usr/share/doc/tool/changelog", b"log"),
            ("usr/share/doc/tool/copyright", b"c"),
        ]);
        let a = from_deb(&deb).expect("layer");
        let b = from_deb(&deb).expect("layer");
        assert_eq!(a.digest, b.digest);
        let names: Vec<String> = entries(&a).into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["usr/bin/tool", "usr/share/doc/tool/copyright"]);
        // Two packages in one layer: a path they share is written once.
        let other = crate::blobs::tests::fake_deb(&[
            ("usr/share/doc/tool/copyright", b"d"),
            ("usr/bin/other", b"o"),
        ]);
        let both = from_debs(&[&deb, &other]).expect("merged");
        let names: Vec<String> = entries(&both).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "usr/bin/tool",
                "usr/share/doc/tool/copyright",
                "usr/bin/other"
            ]
        );
    }

    #[test]
    fn root_layer_links_the_merged_directories() {
        let l = root(Arch::Amd64).expect("root");
        let e = entries(&l);
        assert!(e.contains(&(
            "lib64".into(),
            tar::EntryType::Symlink,
            Some("usr/lib64".into())
        )));
        assert!(e.contains(&("tmp/".into(), tar::EntryType::Directory, None)));
        let arm = entries(&root(Arch::Arm64).expect("root"));
        assert!(!arm.iter().any(|x| x.0 == "lib64"));
    }
}
