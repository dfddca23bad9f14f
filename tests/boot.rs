// SPDX-License-Identifier: Apache-2.0
//! QEMU boot tests (TCG): the test-only `test-oracle` overlay prints one
//! verdict line on the console and powers off. The default image's first
//! boot (U-Boot and its own extlinux.conf, names, identities, grown root,
//! power cuts) is checked on the cluster test's cards (tests/cluster.rs),
//! which boot the same image: two cores cannot afford separate guests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hc_qemu::{fields, Guest, GuestOpts, Machine};
use hc_tests::image::ImageBuild;

struct Built {
    _dir: tempfile::TempDir,
    img: PathBuf,
}

/// examples/homecloud.toml without its data disk: these guests check boot
/// and the agent's steps; Ceph (and its minutes under TCG) is the cluster
/// tests' (tests/cluster.rs, with a second virtual disk per guest).
fn example_without_storage() -> String {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/homecloud.toml"),
    )
    .expect("example");
    let out: String = text
        .lines()
        .filter(|l| !l.starts_with("osd_device"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(
        out.len(),
        text.len(),
        "examples/homecloud.toml has no osd_device"
    );
    out
}

/// An image with the test oracle: the default board with no `--board`
/// (as a user runs `hc-image build`), else `board` with `config` (removed
/// on drop).
fn image(board: Option<&str>, config: Option<&str>) -> Built {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut build = ImageBuild::new(env!("CARGO_BIN_EXE_hc-image"), dir.path());
    if let Some(b) = board {
        build = build.board(b);
    }
    if let Some(c) = config {
        let p = dir.path().join("homecloud.toml");
        std::fs::write(&p, c).expect("config");
        build = build.config(&p);
    }
    let built = build
        .overlay("test-oracle")
        .run()
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{}", built.stderr);
    Built {
        _dir: dir,
        img: built.img,
    }
}

/// A 1 GiB guest on a 4 GiB copy of `img`. First boots start dockerd and
/// form a one-node swarm: 10+ minutes under TCG when guests share two cores,
/// hence the 25-minute verdict timeouts.
fn opts(machine: Machine, img: &Path, work: &Path, mac: &str, cpus: u32) -> GuestOpts {
    GuestOpts {
        machine,
        image: img.to_path_buf(),
        workdir: work.to_path_buf(),
        disk_size: 4 << 30,
        memory_mib: 1024,
        cpus,
        mac: mac.into(),
        reuse_disk: false,
        net: hc_qemu::Net::User,
        data_disk: None,
    }
}

/// The Wi-Fi network the amd64 guest's own access point serves (the test
/// oracle's hwsim check uses the same two values).
const WIFI: &str =
    "[wifi]\nssid = \"hc-test-net\"\npsk = \"correct horse battery\"\ncountry = \"DE\"\n";

#[test]
fn amd64_image_boots_with_ovmf_and_systemd_boot() {
    let b = image(
        Some("amd64"),
        Some(&format!("{}{WIFI}", example_without_storage())),
    );
    let img = &b.img;
    let w = tempfile::tempdir().expect("tempdir");
    // hostapd and lynis, never in an image, on a second drive.
    let debs =
        hc_tests::debs::fetch("amd64", &["hostapd", "lynis"]).unwrap_or_else(|e| panic!("{e:#}"));
    hc_tests::debs::fat_disk(&w.path().join("data.img"), &debs).unwrap_or_else(|e| panic!("{e:#}"));
    let mut o = opts(Machine::Amd64, img, w.path(), "52:54:00:12:34:03", 1);
    o.data_disk = Some(64 << 20);
    let mut g = Guest::start(&o).expect("starting QEMU");
    let v = g
        .wait_for("HC-VERDICT", Duration::from_secs(1500))
        .expect("verdict");
    eprintln!("amd64 verdict after {:.0}s: {v}", g.elapsed().as_secs_f64());
    let console = g.console_text();
    let line = |m: &str| {
        console
            .lines()
            .find(|l| l.contains(m))
            .map(|l| l.trim().to_string())
            .unwrap_or_else(|| panic!("no {m} line on the console"))
    };
    // lynis: printed for the README and the closing note, and held to
    // what this image measured (a regression guard, not the goal).
    for l in console.lines().filter(|l| l.contains("HC-LYNIS")) {
        eprintln!("{}", l.trim());
    }
    let ly = fields(&line("HC-LYNIS "));
    let index: u32 = ly["index"].parse().expect("lynis hardening index");
    assert!(
        index >= LYNIS_FLOOR,
        "lynis hardening index {index} < {LYNIS_FLOOR}: {ly:?}"
    );
    assert_eq!(
        ly["warnings"], "0",
        "lynis warnings (HC-LYNIS-WARNING lines above)"
    );
    // Wi-Fi: joined with WPA3, an address by DHCP, the passphrase in no
    // log and no file others can read, a wrong one reported by `hc status`.
    let wf = fields(&line("HC-WIFI "));
    eprintln!("{wf:?}");
    assert!(
        wf["addr"].starts_with("10.42.0."),
        "no Wi-Fi address: {wf:?}"
    );
    assert_eq!(wf["key-mgmt"], "SAE", "{wf:?}");
    assert!(wf["status"].contains("connected_to_hc-test-net"), "{wf:?}");
    assert_eq!(
        wf["leaks"], "",
        "the passphrase in files others can read: {wf:?}"
    );
    assert_eq!(wf["logged"], "0", "the passphrase in the journal: {wf:?}");
    assert!(wf["wrong-psk"].contains("refused_the_passphrase"), "{wf:?}");
    let f = fields(&v);
    assert_eq!(f["state"], "running", "{f:?}");
    assert_eq!(f["failed"], "", "failed units: {f:?}");
    assert_eq!(f["hostname"], "node3", "{f:?}");
    assert_eq!(f["stamp"], "yes", "{f:?}");
    // The hardened node (issue 12): mount flags, file modes.
    assert_eq!(f["tmp-flags"], "2", "/tmp not nosuid,nodev: {f:?}");
    assert_eq!(f["shm-flags"], "2", "/dev/shm not nosuid,nodev: {f:?}");
    assert_eq!(f["world-writable"], "0", "world-writable files: {f:?}");
    assert_eq!(
        f["loose-secrets"], "",
        "secrets readable beyond root: {f:?}"
    );
    g.wait_exit(Duration::from_secs(120)).expect("powers off");
}

/// lynis' hardening index measured on the amd64 image (see the README);
/// a lower one fails the test.
const LYNIS_FLOOR: u32 = 78;

fn mtools(disk: &Path, offset: u64, args: &[&str]) {
    let out = Command::new(args[0])
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", disk.display()))
        .args(&args[1..])
        .output()
        .expect("mtools");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hcboot_offset(img: &Path) -> u64 {
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(img.with_file_name("manifest.json")).expect("manifest"),
    )
    .expect("json");
    m["disk"]["partitions"][0]["start"].as_u64().expect("start")
}

#[test]
fn malformed_config_blocks_the_agent_until_fixed() {
    let b = image(None, None);
    let w = tempfile::tempdir().expect("tempdir");
    let disk = w.path().join("disk.img");
    hc_qemu::sparse_copy(&b.img, &disk, 4 << 30).expect("copy");
    let off = hcboot_offset(&b.img);
    // A user's typo on the FAT partition: a MAC with five bytes.
    let good = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/homecloud.toml"),
    )
    .expect("example");
    let bad = w.path().join("bad.toml");
    std::fs::write(
        &bad,
        good.replace("52:54:00:12:34:01\"", "52:54:00:12:34\""),
    )
    .expect("write");
    mtools(
        &disk,
        off,
        &[
            "mcopy",
            "-o",
            bad.to_str().expect("utf-8"),
            "::/homecloud.toml",
        ],
    );
    let opts = GuestOpts {
        reuse_disk: true,
        ..opts(Machine::Arm64, &b.img, w.path(), "52:54:00:12:34:01", 2)
    };
    let mut g = Guest::start(&opts).expect("boot");
    let v = fields(
        &g.wait_for("HC-VERDICT", Duration::from_secs(1500))
            .expect("verdict"),
    );
    g.wait_exit(Duration::from_secs(120)).expect("power off");
    assert_eq!(v["stamp"], "no", "{v:?}");
    assert_eq!(v["agent"], "failed", "{v:?}");
    assert_eq!(v["blocked"], "1", "{v:?}");
    assert!(
        v["why"].contains("nodes[0].mac"),
        "status names the key: {v:?}"
    );
    assert!(v["failed"].contains("hc-firstboot.service"), "{v:?}");
    // Nothing was half-configured: the hostname is still the image's.
    assert_ne!(v["hostname"], "node1", "{v:?}");
    // Fixed from "another OS" and rebooted: it converges.
    let fixed = w.path().join("good.toml");
    std::fs::write(&fixed, example_without_storage()).expect("write");
    mtools(
        &disk,
        off,
        &[
            "mcopy",
            "-o",
            fixed.to_str().expect("utf-8"),
            "::/homecloud.toml",
        ],
    );
    let mut g = Guest::start(&opts).expect("boot again");
    let v = fields(
        &g.wait_for("HC-VERDICT", Duration::from_secs(1500))
            .expect("verdict"),
    );
    g.wait_exit(Duration::from_secs(120)).expect("power off");
    assert_eq!(v["stamp"], "yes", "{v:?}");
    assert_eq!(v["hostname"], "node1", "{v:?}");
    assert_eq!(v["failed"], "", "{v:?}");
}

#[test]
fn rock64_and_pine64_images_carry_blob_dtb_and_console() {
    for (board, dtb, console) in [
        (
            "rock64",
            "rockchip/rk3328-rock64.dtb",
            "console=ttyS2,1500000n8",
        ),
        (
            "pine64-lts",
            "allwinner/sun50i-a64-pine64-lts.dtb",
            "console=ttyS0,115200n8",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = ImageBuild::new(env!("CARGO_BIN_EXE_hc-image"), dir.path())
            .board(board)
            .args(["-q"])
            .run()
            .unwrap_or_else(|e| panic!("{e:#}"))
            .img;
        let insp = Command::new(env!("CARGO_BIN_EXE_hc-image"))
            .arg("inspect")
            .arg(&img)
            .output()
            .expect("inspect");
        let text = String::from_utf8_lossy(&insp.stdout);
        assert!(
            text.contains("blob u-boot at") && text.contains("matches"),
            "{text}"
        );
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("manifest.json")).expect("manifest"),
        )
        .expect("json");
        let root = m["disk"]["partitions"][1]["start"].as_u64().expect("root");
        let at = format!("{}?offset={root}", img.display());
        let conf = Command::new("debugfs")
            .args(["-R", "cat /boot/extlinux/extlinux.conf"])
            .arg(&at)
            .output()
            .expect("debugfs");
        let conf = String::from_utf8_lossy(&conf.stdout).into_owned();
        assert!(conf.contains(console), "{board}: {conf}");
        let fdt = conf
            .lines()
            .find_map(|l| l.trim().strip_prefix("fdt "))
            .unwrap_or_else(|| panic!("{board}: no fdt line: {conf}"));
        assert!(fdt.ends_with(dtb), "{board}: {fdt}");
        let stat = Command::new("debugfs")
            .args(["-R", &format!("stat {fdt}")])
            .arg(&at)
            .output()
            .expect("debugfs");
        let s = String::from_utf8_lossy(&stat.stdout);
        assert!(
            s.contains("Type: regular"),
            "{board}: {fdt} missing in the root filesystem: {s}"
        );
    }
}
