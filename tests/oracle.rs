// SPDX-License-Identifier: Apache-2.0
//! Oracle tests: build real images with the `hc-image` binary and let real
//! tools judge them (sfdisk, e2fsck, fsck.vfat, debugfs, bmaptool, dpkg-deb).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use hc_tests::rootfs::{write_rootfs_fixture, Kind, RootfsFacts};
use hc_tests::{command, run, sha256_file};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hc-image"))
}

struct Fixture {
    _dir: tempfile::TempDir,
    tar: PathBuf,
    facts: RootfsFacts,
    cache: PathBuf,
}

/// One fixture tarball for every test in this binary.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = dir.path().join("rootfs.tar");
        let facts = write_rootfs_fixture(&tar).expect("fixture tarball");
        // The builder's own cache (blobs, agent binaries), outside the clone.
        let cache = std::env::var_os("HC_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("hc-image"))
            })
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                    .join(".cache/hc-image")
            });
        Fixture {
            _dir: dir,
            tar,
            facts,
            cache,
        }
    })
}

fn hc(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(bin());
    c.args(args).env("HC_CACHE_DIR", &fixture().cache);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running hc-image")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "hc-image failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Built {
    dir: tempfile::TempDir,
    img: PathBuf,
    manifest: Value,
}

fn build_board(board: &str, extra: &[&str]) -> Built {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8 path").to_string();
    let tar = f.tar.to_str().expect("utf-8 path");
    let mut args = vec![
        "-q", "build", "--board", board, "--rootfs", tar, "--out", &out,
    ];
    args.extend_from_slice(extra);
    ok(&hc(&args, &[]));
    let img = dir.path().join(format!("homecloud-{board}.img"));
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("manifest.json")).expect("manifest.json"),
    )
    .expect("manifest is JSON");
    Built { dir, img, manifest }
}

fn part(m: &Value, n: usize) -> (u64, u64) {
    let p = &m["disk"]["partitions"][n];
    (
        p["start"].as_u64().expect("start"),
        p["size"].as_u64().expect("size"),
    )
}

fn at(img: &Path, off: u64) -> String {
    format!("{}?offset={off}", img.display())
}

fn copy_region(img: &Path, off: u64, len: u64, dst: &Path) -> Result<()> {
    let mut f = std::fs::File::open(img)?;
    f.seek(SeekFrom::Start(off))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)?;
    std::fs::write(dst, buf)?;
    Ok(())
}

/// `debugfs stat` of many paths in one run: path -> fields.
fn stats(img: &Path, off: u64, paths: &[&str]) -> Result<BTreeMap<String, String>> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("cmds");
    let mut s = String::new();
    for p in paths {
        s.push_str(&format!("stat \"{p}\"\n"));
    }
    std::fs::write(&script, s)?;
    let out = command("debugfs")?
        .arg("-f")
        .arg(&script)
        .arg(at(img, off))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut map = BTreeMap::new();
    for chunk in text.split("debugfs: stat ").skip(1) {
        let (name, rest) = chunk.split_once('\n').unwrap_or((chunk, ""));
        map.insert(name.trim().trim_matches('"').to_string(), rest.to_string());
    }
    if map.len() != paths.len() {
        bail!(
            "debugfs answered for {} of {} paths: {}",
            map.len(),
            paths.len(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(map)
}

fn field<'a>(stat: &'a str, key: &str) -> Option<&'a str> {
    let i = stat.find(key)?;
    stat[i + key.len()..].split_whitespace().next()
}

fn check_oracles(board: &str, b: &Built) -> Result<()> {
    let f = fixture();
    let m = &b.manifest;
    // Partition table as planned.
    let sf: Value = serde_json::from_str(&run(command("sfdisk")?.arg("--json").arg(&b.img))?)?;
    let pt = &sf["partitiontable"];
    let table = m["disk"]["table"].as_str().context("table")?;
    let label = pt["label"].as_str().context("label")?;
    assert_eq!(label, if table == "mbr" { "dos" } else { "gpt" }, "{board}");
    for n in 0..2 {
        let (start, size) = part(m, n);
        assert_eq!(
            pt["partitions"][n]["start"].as_u64(),
            Some(start / 512),
            "{board} p{n}"
        );
        assert_eq!(
            pt["partitions"][n]["size"].as_u64(),
            Some(size / 512),
            "{board} p{n}"
        );
    }
    // Filesystems clean.
    let (root_off, _) = part(m, 1);
    run(command("e2fsck")?.arg("-fn").arg(at(&b.img, root_off)))?;
    let (boot_off, boot_len) = part(m, 0);
    let fat = b.dir.path().join("boot.vfat");
    copy_region(&b.img, boot_off, boot_len, &fat)?;
    run(command("fsck.vfat")?.arg("-n").arg(&fat))?;
    let toml = run(Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&fat)
        .arg("::/homecloud.toml"))?;
    assert_eq!(
        toml,
        std::fs::read_to_string(repo().join("examples/homecloud.toml"))?,
        "{board}: HCBOOT/homecloud.toml"
    );
    if board == "amd64" {
        run(Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&fat)
            .arg("::/EFI/BOOT"))?;
    }
    // Owners, modes, types, links from the tar headers.
    let wanted: Vec<&str> = f
        .facts
        .entries
        .iter()
        .filter(|e| !e.path.starts_with("/big/") && e.path != "/")
        .map(|e| e.path.as_str())
        .collect();
    let st = stats(&b.img, root_off, &wanted)?;
    for e in f
        .facts
        .entries
        .iter()
        .filter(|e| wanted.contains(&e.path.as_str()))
    {
        let s = &st[&e.path];
        let mode = field(s, "Mode:").context("mode")?;
        let mode = u32::from_str_radix(mode, 8)?;
        assert_eq!(mode & 0o7777, e.mode, "{board}: mode of {}", e.path);
        assert_eq!(
            field(s, "User:").and_then(|v| v.parse().ok()),
            Some(e.uid),
            "{board}: uid of {}",
            e.path
        );
        assert_eq!(
            field(s, "Group:").and_then(|v| v.parse().ok()),
            Some(e.gid),
            "{board}: gid of {}",
            e.path
        );
        let ty = field(s, "Type:").context("type")?;
        match &e.kind {
            Kind::File | Kind::HardLink { .. } => {
                assert_eq!(ty, "regular", "{}", e.path);
                assert_eq!(
                    field(s, "Size:").and_then(|v| v.parse().ok()),
                    Some(e.size),
                    "{board}: size of {}",
                    e.path
                );
            }
            Kind::Dir => assert_eq!(ty, "directory", "{}", e.path),
            Kind::Symlink { target } => {
                assert_eq!(ty, "symlink", "{}", e.path);
                assert_eq!(
                    field(s, "Size:").and_then(|v| v.parse::<usize>().ok()),
                    Some(target.len()),
                    "{}",
                    e.path
                );
            }
            Kind::Char { maj, min } | Kind::Block { maj, min } => {
                assert_eq!(
                    ty,
                    if matches!(e.kind, Kind::Char { .. }) {
                        "character"
                    } else {
                        "block"
                    },
                    "{}",
                    e.path
                );
                let dev = field(s, "Device major/minor number:").context("device numbers")?;
                assert_eq!(dev, format!("{maj:02}:{min:02}"), "{board}: {}", e.path);
            }
            Kind::Fifo => assert_eq!(ty, "FIFO", "{}", e.path),
        }
        if let Kind::HardLink { to } = &e.kind {
            let inode = |s: &str| field(s, "Inode:").map(str::to_string);
            assert_eq!(
                inode(s),
                inode(&st[to]),
                "{board}: {} shares {}'s inode",
                e.path,
                to
            );
            assert_eq!(field(s, "Links:"), Some("2"), "{}", e.path);
        }
    }
    // Content of every regular file with a known hash (the big dir sampled).
    let dump = b.dir.path().join("dump");
    std::fs::create_dir_all(&dump)?;
    for e in
        f.facts.entries.iter().filter(|e| {
            e.sha256.is_some() && (!e.path.starts_with("/big/") || e.path.ends_with('7'))
        })
    {
        let out = command("debugfs")?
            .arg("-R")
            .arg(format!("dump \"{}\" {}/x", e.path, dump.display()))
            .arg(at(&b.img, root_off))
            .output()?;
        assert!(out.status.success());
        assert_eq!(
            Some(sha256_file(&dump.join("x"))?),
            e.sha256.clone(),
            "{board}: content of {}",
            e.path
        );
    }
    // Sparse file keeps its holes.
    let s =
        &stats(&b.img, root_off, &[hc_tests::rootfs::SPARSE_PATH])?[hc_tests::rootfs::SPARSE_PATH];
    let blocks: u64 = field(s, "Blockcount:").context("blockcount")?.parse()?;
    assert!(
        blocks < 1024,
        "{board}: sparse file allocated {blocks} sectors"
    );
    // 5000-entry directory complete.
    let ls = run(command("debugfs")?
        .arg("-R")
        .arg("ls -p /big")
        .arg(at(&b.img, root_off)))?;
    assert_eq!(
        ls.lines().filter(|l| l.contains("/f")).count(),
        5000,
        "{board}: /big"
    );
    // Every xattr, including those mke2fs drops.
    for (path, name, value) in &f.facts.xattrs {
        let out = run(command("debugfs")?
            .arg("-R")
            .arg(format!("ea_get -x \"{path}\" {name}"))
            .arg(at(&b.img, root_off)))?;
        let want: String = value
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        let got: String = out
            .split_whitespace()
            .filter(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(got, want, "{board}: xattr {name} on {path}: {out}");
    }
    // Overlay and baked files are root-owned whatever user built the image.
    let st = stats(
        &b.img,
        root_off,
        &["/etc/hc-image/README", "/etc/hc-image/build.json"],
    )?;
    for s in st.values() {
        assert_eq!(field(s, "User:"), Some("0"));
        assert_eq!(field(s, "Mode:"), Some("0644"));
    }
    // Blobs at their offsets equal the file dpkg-deb extracts from the cached package.
    for blob in m["blobs"].as_array().context("blobs")? {
        let deb = std::fs::read_dir(f.cache.join("debs"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&format!("{}_", blob["package"].as_str().unwrap_or("?")))
                })
            })
            .context("cached .deb")?;
        let x = b.dir.path().join("deb");
        run(command("dpkg-deb")?.arg("-x").arg(&deb).arg(&x))?;
        let want = std::fs::read(x.join(blob["path"].as_str().context("path")?))?;
        let mut got = vec![0u8; want.len()];
        let mut img = std::fs::File::open(&b.img)?;
        img.seek(SeekFrom::Start(blob["offset"].as_u64().context("offset")?))?;
        img.read_exact(&mut got)?;
        assert!(got == want, "{board}: blob bytes differ at offset");
    }
    // bmaptool reproduces the image from .zst + .bmap.
    let copy = b.dir.path().join("copy.img");
    let zst = b.img.with_extension("img.zst");
    let bmap = b.img.with_extension("img.bmap");
    run(command("bmaptool")?
        .arg("copy")
        .arg("--bmap")
        .arg(&bmap)
        .arg(&zst)
        .arg(&copy))?;
    assert_eq!(
        sha256_file(&copy)?,
        sha256_file(&b.img)?,
        "{board}: bmaptool copy"
    );
    used_card_from_bmap(board, b, &bmap)?;
    assert_eq!(
        m["artifacts"]["image"]["sha256"]
            .as_str()
            .map(str::to_string),
        Some(sha256_file(&b.img)?)
    );
    let sums = run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(b.dir.path()))?;
    assert_eq!(sums.matches(": OK").count(), 3, "{sums}");
    Ok(())
}

/// What a block-map writer (bmaptool, hc-image flash) leaves on a used
/// card: only the bmap's ranges written over old bytes. Both filesystems
/// must still check clean, so every block whose zeros matter is mapped.
fn used_card_from_bmap(board: &str, b: &Built, bmap: &Path) -> Result<()> {
    let map = hc_image::flash::bmap::parse(&std::fs::read(bmap)?)
        .map_err(|e| anyhow::anyhow!("{board}: bmap: {e:?}"))?;
    let card = b.dir.path().join("used-card.img");
    let img = std::fs::read(&b.img)?;
    let mut bytes = vec![0xa5u8; img.len()];
    for r in &map.ranges {
        let (s, e) = (r.start as usize, (r.end as usize).min(img.len()));
        bytes[s..e].copy_from_slice(&img[s..e]);
    }
    std::fs::write(&card, &bytes)?;
    let (fat_off, fat_len) = part(&b.manifest, 0);
    let (root_off, _) = part(&b.manifest, 1);
    let fat = b.dir.path().join("used-card.vfat");
    copy_region(&card, fat_off, fat_len, &fat)?;
    run(command("fsck.vfat")?.arg("-n").arg(&fat))
        .with_context(|| format!("{board}: HCBOOT of a used card written from the bmap"))?;
    run(command("e2fsck")?.arg("-fn").arg(at(&card, root_off)))
        .with_context(|| format!("{board}: root of a used card written from the bmap"))?;
    std::fs::remove_file(&card)?;
    Ok(())
}

#[test]
fn every_board_builds_and_passes_the_oracles() {
    for board in ["qemu-arm64", "rock64", "pine64-lts", "amd64"] {
        let b = build_board(board, &[]);
        check_oracles(board, &b).unwrap_or_else(|e| panic!("{board}: {e:#}"));
        let insp = hc(&["inspect", b.img.to_str().expect("utf-8")], &[]);
        ok(&insp);
        let text = String::from_utf8_lossy(&insp.stdout);
        assert!(text.contains("lint: no findings"), "{board}: {text}");
        // The profile's service images, as the builder recorded them.
        for name in ["registry", "base", "redis"] {
            assert!(
                text.contains(&format!("service image homecloud/{name}:")),
                "{board}: {name} not listed: {text}"
            );
        }
        if board == "rock64" || board == "pine64-lts" {
            assert!(
                text.contains("matches (expected from manifest.json)"),
                "{text}"
            );
        }
    }
}

#[test]
fn two_builds_are_byte_identical() {
    let a = build_board("rock64", &[]);
    let b = build_board("rock64", &[]);
    for ext in ["img", "img.zst", "img.bmap"] {
        let name = format!("homecloud-rock64.{ext}");
        assert_eq!(
            sha256_file(&a.dir.path().join(&name)).expect("hash"),
            sha256_file(&b.dir.path().join(&name)).expect("hash"),
            "{name}"
        );
    }
    assert_eq!(
        std::fs::read(a.dir.path().join("manifest.json")).expect("read"),
        std::fs::read(b.dir.path().join("manifest.json")).expect("read")
    );
}

#[test]
fn armbian_base_keeps_its_root_and_gets_our_files() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let fx = hc_tests::armbian::write_armbian_fixture(dir.path(), &f.tar).expect("armbian fixture");
    // inspect reads Armbian's own image.
    let out = hc(&["inspect", "--json", fx.img.to_str().expect("utf-8")], &[]);
    ok(&out);
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["partitions"][0]["start"].as_u64(), Some(fx.root_offset));
    assert_eq!(
        r["partitions"][0]["fs"]["id"].as_str(),
        Some(fx.root_uuid.as_str())
    );
    assert_eq!(r["partitions"][0]["fs"]["kind"].as_str(), Some("ext4"));
    // The fake u-boot region is reported, and differs from the rock64 pin.
    let rock = r["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .find(|b| b["offset"].as_u64() == Some(32768))
        .expect("blob at 32 KiB");
    assert_eq!(rock["matches"].as_bool(), Some(false));

    let outdir = dir.path().join("out");
    let out = hc(
        &[
            "-q",
            "build",
            "--board",
            "rock64",
            "--base",
            fx.img_xz.to_str().expect("utf-8"),
            "--base-sha256",
            &fx.sha256_xz,
            "--out",
            outdir.to_str().expect("utf-8"),
        ],
        &[],
    );
    ok(&out);
    let img = outdir.join("homecloud-rock64.img");
    let m: Value =
        serde_json::from_slice(&std::fs::read(outdir.join("manifest.json")).expect("read"))
            .expect("json");
    assert_eq!(m["base"]["kind"], "armbian");
    assert_eq!(m["base"]["sha256"].as_str(), Some(fx.sha256_xz.as_str()));
    let (root_off, _) = part(&m, 1);
    run(command("e2fsck")
        .expect("e2fsck")
        .arg("-fn")
        .arg(at(&img, root_off)))
    .expect("e2fsck clean");
    let out = hc(&["inspect", "--json", img.to_str().expect("utf-8")], &[]);
    ok(&out);
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        r["partitions"][1]["fs"]["id"].as_str(),
        Some(fx.root_uuid.as_str()),
        "root UUID kept"
    );
    assert_eq!(
        r["partitions"][1]["fs"]["label"].as_str(),
        Some(fx.root_label.as_str())
    );
    assert_eq!(r["lint"].as_array().map(Vec::len), Some(0), "{r}");
    let features = m["disk"]["ext4_features"].as_str().expect("features");
    assert!(
        features.contains("metadata_csum") && !features.contains("orphan_file"),
        "{features}"
    );
    let env = run(command("debugfs")
        .expect("debugfs")
        .arg("-R")
        .arg("cat /boot/armbianEnv.txt")
        .arg(at(&img, root_off)))
    .expect("cat");
    assert_eq!(env, fx.armbian_env);
    let st = stats(
        &img,
        root_off,
        &[
            "/etc/hc-image/README",
            "/etc/hc-image/build.json",
            "/usr/bin/su-fixture",
        ],
    )
    .expect("stat");
    assert_eq!(
        field(&st["/etc/hc-image/build.json"], "Mode:"),
        Some("0644")
    );
    assert_eq!(field(&st["/etc/hc-image/README"], "User:"), Some("0"));
    assert_eq!(field(&st["/usr/bin/su-fixture"], "Mode:"), Some("04755"));
}

/// Runs a build expected to fail on input: exit 2, a message containing
/// each of `needles`, and nothing left in the output directory.
fn rejects(args: &[&str], env: &[(&str, &Path)], needles: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let outdir = dir.path().join("out");
    let mut full: Vec<&str> = vec!["build"];
    full.extend_from_slice(args);
    let o = outdir.to_str().expect("utf-8").to_string();
    full.extend_from_slice(&["--out", &o]);
    let out = hc(&full, env);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in {err}");
    }
    let left: Vec<_> = std::fs::read_dir(&outdir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{args:?} left {left:?}");
    err
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write");
    p
}

#[test]
fn bad_input_exits_2_and_leaves_nothing() {
    let f = fixture();
    let tar = f.tar.to_str().expect("utf-8");
    let d = tempfile::tempdir().expect("tempdir");
    let example = std::fs::read_to_string(repo().join("examples/homecloud.toml")).expect("example");

    let bad = write(d.path(), "bad.toml", b"schema = 1\n[cluster\nname = 1\n");
    rejects(
        &["--rootfs", tar, "--config", bad.to_str().expect("p")],
        &[],
        &["bad.toml", "(file)", "not valid TOML", "fix:"],
    );

    let unk = write(
        d.path(),
        "unknown.toml",
        format!("{example}\n[storage2]\nx = 1\n").as_bytes(),
    );
    rejects(
        &["--rootfs", tar, "--config", unk.to_str().expect("p")],
        &[],
        &["unknown.toml", "storage2", "unknown field"],
    );

    // Issue 12's bad settings, as a user would write them: each exits 2
    // at build naming the key and the fix.
    let static_off_subnet = example
        .replace(
            "mode = \"dhcp\"",
            "mode = \"static\"\ngateway = \"192.168.1.1\"",
        )
        .replace(
            "mac = \"52:54:00:12:34:01\"",
            "mac = \"52:54:00:12:34:01\"\naddress = \"192.168.2.51/24\"",
        )
        .replace(
            "mac = \"52:54:00:12:34:02\"",
            "mac = \"52:54:00:12:34:02\"\naddress = \"192.168.1.52/24\"",
        )
        .replace(
            "mac = \"52:54:00:12:34:03\"",
            "mac = \"52:54:00:12:34:03\"\naddress = \"192.168.1.53/24\"",
        );
    let short_psk =
        format!("{example}\n[wifi]\nssid = \"Home\"\npsk = \"1234567\"\ncountry = \"DE\"\n");
    let zone = example.replace(
        "# timezone = \"Europe/Berlin\"",
        "timezone = \"Mars/Olympus\"",
    );
    for (name, text, needles) in [
        (
            "static.toml",
            static_off_subnet,
            ["nodes[0].address", "not on the gateway"],
        ),
        ("psk.toml", short_psk, ["wifi.psk", "8 to 63"]),
        ("zone.toml", zone, ["cluster.timezone", "Mars/Olympus"]),
    ] {
        assert_ne!(text, example, "{name}: the example changed shape");
        let p = write(d.path(), name, text.as_bytes());
        rejects(
            &["--rootfs", tar, "--config", p.to_str().expect("p")],
            &[],
            &[name, needles[0], needles[1], "fix:"],
        );
    }

    let e = rejects(
        &["--rootfs", tar, "--board", "rpi4"],
        &[],
        &["unknown board", "rock64"],
    );
    assert!(e.contains("pine64-lts") && e.contains("qemu-arm64") && e.contains("amd64"));

    rejects(
        &["--rootfs", tar, "--root-size", "8MiB"],
        &[],
        &["--root-size", "root tree needs at least", "raise it"],
    );

    let notar = write(
        d.path(),
        "notes.txt",
        &b"hello, this is not a tarball\n".repeat(40),
    );
    rejects(
        &["--rootfs", notar.to_str().expect("p")],
        &[],
        &["notes.txt", "--rootfs", "not a tar archive"],
    );

    let full = std::fs::read(&f.tar).expect("read");
    let trunc = write(d.path(), "trunc.tar", &full[..full.len() / 3 + 100]);
    rejects(
        &["--rootfs", trunc.to_str().expect("p")],
        &[],
        &["trunc.tar", "truncated"],
    );

    // A blob over the GPT entry array: pine64-lts with a GPT.
    let data = tempfile::tempdir().expect("tempdir");
    for sub in ["boards", "images", "overlays", "examples"] {
        run(Command::new("cp")
            .arg("-r")
            .arg(repo().join(sub))
            .arg(data.path()))
        .expect("cp");
    }
    let pine = std::fs::read_to_string(repo().join("boards/pine64-lts.toml")).expect("read");
    std::fs::write(
        data.path().join("boards/pine64-gpt.toml"),
        pine.replace("table = \"mbr\"", "table = \"gpt\"")
            .replace("name = \"pine64-lts\"", "name = \"pine64-gpt\""),
    )
    .expect("write");
    rejects(
        &["--rootfs", tar, "--board", "pine64-gpt"],
        &[("HC_DATA_DIR", data.path())],
        &[
            "boards/pine64-gpt.toml: blobs[0].offset",
            "bytes 8192..852325",
            "bytes 0..17408",
            "mbr",
        ],
    );
    // The profile's service images: a name that is no recipe, and a list
    // without the registry that serves them.
    let prof = data.path().join("images/homecloud.toml");
    let text = std::fs::read_to_string(&prof).expect("read");
    let listed = "containers = [\"registry\", \"base\", \"redis\"]";
    assert!(text.contains(listed), "the profile changed shape");
    for (list, needles) in [
        (
            "[\"registry\", \"nosuch\"]",
            ["containers[1]", "not a recipe"],
        ),
        ("[\"base\"]", ["containers", "add \"registry\""]),
    ] {
        std::fs::write(&prof, text.replace(listed, &format!("containers = {list}")))
            .expect("write");
        rejects(
            &["--rootfs", tar],
            &[("HC_DATA_DIR", data.path())],
            &["images/homecloud.toml", needles[0], needles[1]],
        );
    }
    // A profile without a package base needs --rootfs or --base.
    let cut = text.find("\n[base]").expect("profile has a [base] table");
    std::fs::write(&prof, &text[..cut + 1]).expect("write");
    rejects(
        &[],
        &[("HC_DATA_DIR", data.path())],
        &["images/homecloud.toml: base:", "--rootfs", "--base"],
    );
}

#[test]
fn bad_base_images_exit_2() {
    let f = fixture();
    let d = tempfile::tempdir().expect("tempdir");
    let fx = hc_tests::armbian::write_armbian_fixture(d.path(), &f.tar).expect("fixture");
    let xz = fx.img_xz.to_str().expect("utf-8");
    rejects(
        &[
            "--board",
            "rock64",
            "--base",
            xz,
            "--base-sha256",
            &"0".repeat(64),
        ],
        &[],
        &["--base", "sha256 is", "download the image again"],
    );
    rejects(
        &["--board", "rock64", "--base", xz],
        &[],
        &["no sha256 pin", "--base-sha256"],
    );
    // Truncated .xz with a matching pin: the pin passes, the stream does not.
    let full = std::fs::read(&fx.img_xz).expect("read");
    let cut = write(d.path(), "cut.img.xz", &full[..full.len() / 2]);
    let sha = sha256_file(&cut).expect("hash");
    rejects(
        &[
            "--board",
            "rock64",
            "--base",
            cut.to_str().expect("p"),
            "--base-sha256",
            &sha,
        ],
        &[],
        &["cut.img.xz", "truncated or corrupt"],
    );
    // A disk whose only partition is FAT.
    let img = d.path().join("fat-only.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(64 << 20))
        .expect("create");
    hc_tests::run_with_stdin(
        command("sfdisk").expect("sfdisk").arg("-q").arg(&img),
        b"label: dos\nstart=2048, type=c\n",
    )
    .expect("sfdisk");
    let fat = d.path().join("p1.vfat");
    run(command("mkfs.vfat")
        .expect("mkfs")
        .args(["-F", "32", "-C"])
        .arg(&fat)
        .arg("60000"))
    .expect("mkfs.vfat");
    let data = std::fs::read(&fat).expect("read");
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .expect("open");
    w.seek(SeekFrom::Start(2048 * 512)).expect("seek");
    w.write_all(&data).expect("write");
    drop(w);
    let sha = sha256_file(&img).expect("hash");
    rejects(
        &[
            "--board",
            "rock64",
            "--base",
            img.to_str().expect("p"),
            "--base-sha256",
            &sha,
        ],
        &[],
        &["no ext4 root partition", "vfat"],
    );
}

/// A tiny HTTP server standing in for the Debian mirror, on loopback.
fn serve(files: BTreeMap<String, Vec<u8>>) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().take(64) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let resp = match files.get(&path) {
                Some(body) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = s.write_all(&resp);
        }
    });
    format!("http://{addr}")
}

#[test]
fn blob_cache_and_mirror_failures() {
    let f = fixture();
    let tar = f.tar.to_str().expect("utf-8");
    // Warm the real cache, then corrupt a copy of it: the build fetches again and succeeds.
    build_board("pine64-lts", &[]);
    let cache = tempfile::tempdir().expect("tempdir");
    run(Command::new("cp")
        .arg("-r")
        .arg(f.cache.join("debs"))
        .arg(cache.path()))
    .expect("cp");
    let deb = std::fs::read_dir(cache.path().join("debs"))
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("u-boot-sunxi_"))
        .expect("cached sunxi deb");
    let good = std::fs::read(&deb).expect("read");
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&deb, &bad).expect("corrupt");
    // The mirror serves the good package: re-fetch repairs the cache.
    let pool = "/pool/main/u/u-boot/u-boot-sunxi_2025.01-3+deb13u1_arm64.deb".to_string();
    let mirror = serve(BTreeMap::from([(pool.clone(), good.clone())]));
    let out = tempfile::tempdir().expect("tempdir");
    let o = Command::new(bin())
        .args([
            "-q",
            "build",
            "--board",
            "pine64-lts",
            "--rootfs",
            tar,
            "--out",
        ])
        .arg(out.path())
        .env("HC_CACHE_DIR", cache.path())
        .env("HC_DEBIAN_MIRROR", &mirror)
        .output()
        .expect("run");
    ok(&o);
    assert_eq!(std::fs::read(&deb).expect("read"), good, "cache repaired");
    // The mirror serves a tampered package: fail clearly, exit 2.
    std::fs::write(&deb, &bad).expect("corrupt");
    let mirror = serve(BTreeMap::from([(pool, bad.clone())]));
    let e = rejects(
        &["--board", "pine64-lts", "--rootfs", tar],
        &[
            ("HC_CACHE_DIR", cache.path()),
            ("HC_DEBIAN_MIRROR", Path::new(&mirror)),
        ],
        &[
            "boards/pine64-lts.toml: blobs[0].deb_sha256",
            "fetched again and still differs",
        ],
    );
    assert!(e.contains("HC_DEBIAN_MIRROR"), "{e}");
    // The pinned version is gone and the index lists a newer one.
    // The failed fetch above already dropped the stale file.
    let _ = std::fs::remove_file(&deb);
    let index = "Package: u-boot-sunxi\nSource: u-boot\nVersion: 2025.01-9\nFilename: pool/main/u/u-boot/u-boot-sunxi_2025.01-9_arm64.deb\nSHA256: 00\n\n";
    let mut xz = Vec::new();
    let mut enc = Command::new("xz")
        .args(["-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("xz");
    enc.stdin
        .take()
        .expect("stdin")
        .write_all(index.as_bytes())
        .expect("write");
    enc.stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut xz)
        .expect("read");
    enc.wait().expect("wait");
    let mirror = serve(BTreeMap::from([(
        "/dists/trixie/main/binary-arm64/Packages.xz".to_string(),
        xz,
    )]));
    rejects(
        &["--board", "pine64-lts", "--rootfs", tar],
        &[
            ("HC_CACHE_DIR", cache.path()),
            ("HC_DEBIAN_MIRROR", Path::new(&mirror)),
        ],
        &[
            "blobs[0].version",
            "no longer on the mirror",
            "now has 2025.01-9",
            "hc-image boards pin",
        ],
    );
}

#[test]
fn config_check_and_schema() {
    let o = hc(
        &[
            "config",
            "check",
            repo().join("examples/homecloud.toml").to_str().expect("p"),
        ],
        &[],
    );
    ok(&o);
    let d = tempfile::tempdir().expect("tempdir");
    let bad = write(
        d.path(),
        "h.toml",
        b"schema = 1\n[cluster]\nname = \"Home\"\ndomain = \"home.arpa\"\n",
    );
    let o = hc(&["config", "check", bad.to_str().expect("p")], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("h.toml: cluster.name"));
    let o = hc(&["config", "schema"], &[]);
    ok(&o);
    let s: Value = serde_json::from_slice(&o.stdout).expect("schema is JSON");
    assert!(s["properties"]["cluster"].is_object(), "{s}");
    let o = hc(&["boards"], &[]);
    ok(&o);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 4);
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut enc = Command::new("xz")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("xz");
    let mut stdin = enc.stdin.take().expect("stdin");
    let data = data.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&data));
    let mut out = Vec::new();
    enc.stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read");
    w.join().expect("join").expect("write");
    assert!(enc.wait().expect("wait").success());
    out
}

#[test]
fn boards_pin_updates_a_stale_pin() {
    let f = fixture();
    build_board("pine64-lts", &[]);
    let deb_path = std::fs::read_dir(f.cache.join("debs"))
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("u-boot-sunxi_"))
        .expect("cached sunxi deb");
    let deb = std::fs::read(&deb_path).expect("read");
    let deb_sha = hc_tests::sha256_hex(&deb);
    let data = tempfile::tempdir().expect("tempdir");
    for sub in ["boards", "images", "overlays", "examples"] {
        run(Command::new("cp")
            .arg("-r")
            .arg(repo().join(sub))
            .arg(data.path()))
        .expect("cp");
    }
    let board = data.path().join("boards/pine64-lts.toml");
    let current = std::fs::read_to_string(&board).expect("read");
    let stale = current
        .replace("2025.01-3+deb13u1", "2024.01+dfsg-1")
        .replace(&deb_sha, &"1".repeat(64));
    std::fs::write(&board, &stale).expect("write");
    let index = format!(
        "Package: u-boot-sunxi\nSource: u-boot\nVersion: 2025.01-3+deb13u1\nFilename: pool/main/u/u-boot/u-boot-sunxi_2025.01-3+deb13u1_arm64.deb\nSHA256: {deb_sha}\n\n"
    );
    let mirror = serve(BTreeMap::from([
        (
            "/dists/trixie/main/binary-arm64/Packages.xz".to_string(),
            xz(index.as_bytes()),
        ),
        (
            "/pool/main/u/u-boot/u-boot-sunxi_2025.01-3+deb13u1_arm64.deb".to_string(),
            deb,
        ),
    ]));
    let out = Command::new(bin())
        .args(["boards", "pin", "pine64-lts"])
        .env("HC_DATA_DIR", data.path())
        .env("HC_DEBIAN_MIRROR", &mirror)
        .output()
        .expect("run");
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2024.01+dfsg-1 -> 2025.01-3+deb13u1"),
        "{text}"
    );
    // The stale pin is replaced with exactly what the repository pins today.
    assert_eq!(std::fs::read_to_string(&board).expect("read"), current);
}
