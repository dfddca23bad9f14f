// SPDX-License-Identifier: Apache-2.0
//! The tar stream against the `tar` crate's archives.

use std::io::Read;

use super::*;

fn sample() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
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
    assert!(scan(&b"this is not a tar archive at all, just some text that goes on"[..]).is_err());
    assert!(scan(&[][..]).is_err());
}
