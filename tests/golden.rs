// SPDX-License-Identifier: Apache-2.0
//! Golden builds: every board built from the generated fixture rootfs must
//! give the `manifest.json` and image sha256 recorded under
//! `tests/golden/<board>/`, byte for byte. A change to the builder that
//! should not change its output (a refactor) proves itself here.
//!
//! Each board is built twice: from the fixture as it is (`<board>/`), and
//! from the fixture plus a stand-in kernel, initrd and systemd-boot loader
//! (`<board>+kernel/`), so the boot entries (extlinux.conf, /etc/default/u-boot,
//! the ESP's loader and entry) are pinned as well.
//!
//! The builds do not depend on the agent's source: they ship a fixed
//! stand-in for `hc-firstboot`, written by this test, through the builder's
//! `HC_AGENT_BINARY` seam, and a fixed cluster secret (`--cluster-secret`).
//! They still follow everything else the image is made of: `boards/`,
//! `images/homecloud.toml`, `overlays/`, `examples/homecloud.toml`, the
//! pinned blobs and the builder's version.
//!
//! The manifest's `tools` (the host's mke2fs, mkfs.vfat and mcopy versions)
//! are left out of the comparison, so the test passes on any CI machine set
//! up by `.ci/install-deps`; when the image hash differs and they differ
//! too, the message says so, since mke2fs is then the likely cause.
//!
//! To re-record after an intended change:
//! `HC_RECORD_GOLDEN=1 cargo test -p hc-image --test golden`
//! writes the files and fails (so a recording never passes unnoticed); run
//! it again without the variable, and commit `tests/golden/` with the change
//! that explains it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hc_tests::image::ImageBuild;
use hc_tests::rootfs::write_rootfs_fixture;
use hc_tests::sha256_file;
use serde_json::Value;

const BOARDS: [&str; 4] = ["rock64", "pine64-lts", "qemu-arm64", "amd64"];
/// The stand-in kernel's version, and the files that make the fixture bootable.
const KERNEL: &str = "6.12.0-golden-arm64";
const BOOT_FILES: [(&str, &str); 3] = [
    ("boot/vmlinuz-", "kernel"),
    ("boot/initrd.img-", "initrd"),
    ("usr/lib/systemd/boot/efi/systemd-bootx64.efi", "loader"),
];
const RECORD_ENV: &str = "HC_RECORD_GOLDEN";

/// Stands in for `hc-firstboot` in the image: fixed bytes, never run.
const AGENT_STANDIN: &[u8] =
    b"#!/bin/sh\n# hc-image golden test: a fixed stand-in for hc-firstboot.\nexit 1\n";
/// A fixed cluster secret (the file format: 64 hex digits).
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";

fn golden_dir(board: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(board)
}

struct Now {
    manifest: Value,
    manifest_text: Vec<u8>,
    image_sha256: String,
}

/// A copy of the fixture tarball with [`BOOT_FILES`] appended (stand-in
/// bytes, never booted).
fn with_kernel(tar: &Path, out: &Path) {
    let mut data = std::fs::read(tar).expect("reading the fixture");
    // The archive ends with two zero blocks: the new members go before them.
    let end = data.len() - 1024;
    assert!(data[end..].iter().all(|&b| b == 0), "fixture tar end");
    data.truncate(end);
    let mut b = tar::Builder::new(data);
    for (path, what) in BOOT_FILES {
        let path = if path.ends_with('-') {
            format!("{path}{KERNEL}")
        } else {
            path.to_string()
        };
        let body = format!("hc-image golden test: a stand-in {what}, never booted\n");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(hc_tests::rootfs::FIXTURE_MTIME);
        h.set_size(body.len() as u64);
        b.append_data(&mut h, format!("./{path}"), body.as_bytes())
            .expect("appending to the fixture");
    }
    std::fs::write(out, b.into_inner().expect("finishing the tar")).expect("writing the tar");
}

fn build(work: &Path, tar: &Path, agent: &Path, secret: &Path, board: &str) -> Now {
    let out = work.join("out");
    let b = ImageBuild::new(env!("CARGO_BIN_EXE_hc-image"), &out)
        .board(board.split('+').next().unwrap_or(board))
        .args([
            Path::new("--rootfs"),
            tar,
            Path::new("--cluster-secret"),
            secret,
        ])
        .env("HC_AGENT_BINARY", agent)
        // The profile's SOURCE_DATE_EPOCH and data files, whatever the
        // caller's environment says.
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("HC_DATA_DIR")
        .run()
        .unwrap_or_else(|e| panic!("{board}: {e:#}"));
    let manifest_text = std::fs::read(&b.manifest).expect("manifest.json");
    let manifest = serde_json::from_slice(&manifest_text).expect("manifest is JSON");
    let image_sha256 = sha256_file(&b.img).expect("hashing the image");
    // Only the recorded files are kept: the images are hundreds of MiB.
    let _ = std::fs::remove_dir_all(&out);
    Now {
        manifest,
        manifest_text,
        image_sha256,
    }
}

/// `<sha256>  homecloud-<board>.img`, as sha256sum writes it.
fn sha_line(board: &str, sha: &str) -> String {
    let board = board.split('+').next().unwrap_or(board);
    format!("{sha}  homecloud-{board}.img\n")
}

/// The manifest as compared: without the host's tool versions.
fn normalised(m: &Value) -> Value {
    let mut m = m.clone();
    if let Some(o) = m.as_object_mut() {
        o.remove("tools");
    }
    m
}

/// One line per differing leaf: `path: golden X, now Y`.
fn diff(path: &str, golden: &Value, now: &Value, out: &mut Vec<String>) {
    match (golden, now) {
        (Value::Object(g), Value::Object(n)) => {
            let keys: std::collections::BTreeSet<&String> = g.keys().chain(n.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (g.get(k), n.get(k)) {
                    (Some(a), Some(b)) => diff(&p, a, b, out),
                    (Some(a), None) => out.push(format!("{p}: golden {a}, now absent")),
                    (None, Some(b)) => out.push(format!("{p}: golden absent, now {b}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(g), Value::Array(n)) if g.len() == n.len() => {
            for (i, (a, b)) in g.iter().zip(n).enumerate() {
                diff(&format!("{path}[{i}]"), a, b, out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: golden {a}, now {b}")),
        _ => {}
    }
}

/// What differs for one board, empty when it matches.
fn compare(board: &str, now: &Now) -> Vec<String> {
    let dir = golden_dir(board);
    let read = |name: &str| {
        std::fs::read(dir.join(name)).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (record it with {RECORD_ENV}=1)",
                dir.join(name).display()
            )
        })
    };
    let golden: Value =
        serde_json::from_slice(&read("manifest.json")).expect("golden manifest is JSON");
    let golden_sha = String::from_utf8_lossy(&read("image.sha256")).into_owned();
    let mut lines = Vec::new();
    diff(
        "manifest",
        &normalised(&golden),
        &normalised(&now.manifest),
        &mut lines,
    );
    if golden_sha != sha_line(board, &now.image_sha256) {
        let mut l = format!(
            "image sha256: golden {}, now {}",
            golden_sha.split_whitespace().next().unwrap_or(""),
            now.image_sha256
        );
        if golden["tools"] != now.manifest["tools"] {
            let _ = write!(
                l,
                " (the host tools differ too: golden {}, now {})",
                golden["tools"], now.manifest["tools"]
            );
        }
        lines.push(l);
    }
    lines
}

fn record(board: &str, now: &Now) {
    let dir = golden_dir(board);
    std::fs::create_dir_all(&dir).expect("creating tests/golden/<board>");
    std::fs::write(dir.join("manifest.json"), &now.manifest_text).expect("writing manifest.json");
    std::fs::write(dir.join("image.sha256"), sha_line(board, &now.image_sha256))
        .expect("writing image.sha256");
}

#[test]
fn every_board_matches_its_golden_manifest_and_image_hash() {
    let work = tempfile::tempdir().expect("tempdir");
    let tar = work.path().join("rootfs.tar");
    write_rootfs_fixture(&tar).expect("fixture tarball");
    let agent = work.path().join("hc-firstboot");
    std::fs::write(&agent, AGENT_STANDIN).expect("agent stand-in");
    let secret = work.path().join("golden.key");
    std::fs::write(&secret, SECRET).expect("secret");
    let kernel_tar = work.path().join("rootfs-kernel.tar");
    with_kernel(&tar, &kernel_tar);
    let recording = std::env::var_os(RECORD_ENV).is_some_and(|v| !v.is_empty());
    let mut report = String::new();
    let runs = BOARDS
        .iter()
        .map(|b| (b.to_string(), &tar))
        .chain(BOARDS.iter().map(|b| (format!("{b}+kernel"), &kernel_tar)));
    for (board, tar) in runs {
        let board = board.as_str();
        let now = build(work.path(), tar, &agent, &secret, board);
        if recording {
            record(board, &now);
            let _ = writeln!(report, "recorded {}", golden_dir(board).display());
            continue;
        }
        let lines = compare(board, &now);
        if !lines.is_empty() {
            let _ = writeln!(report, "{board}:\n  {}", lines.join("\n  "));
        }
    }
    if recording {
        panic!("{report}{RECORD_ENV} is set: golden files written; run again without it and commit tests/golden/");
    }
    assert!(
        report.is_empty(),
        "builds differ from tests/golden/ (if the change is intended, re-record with {RECORD_ENV}=1 cargo test -p hc-image --test golden, and say why in the commit):\n{report}"
    );
}
