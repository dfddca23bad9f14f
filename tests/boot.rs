// SPDX-License-Identifier: Apache-2.0
//! QEMU boot tests (TCG): the default image (board qemu-arm64, package-built
//! base) boots through U-Boot and its own extlinux.conf to multi-user with no
//! failed unit. The test-only `test-oracle` overlay prints one verdict line on
//! the console and powers off.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use hc_qemu::{fields, Guest, GuestOpts, Machine};

struct Built {
    _dir: tempfile::TempDir,
    img: PathBuf,
}

/// One image for every test here: building the base is the slow part.
fn image() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(env!("CARGO_BIN_EXE_hc-image"))
            .args(["build", "--extra-overlay", "test-oracle", "--out"])
            .arg(dir.path())
            .output()
            .expect("running hc-image");
        assert!(
            out.status.success(),
            "build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        let img = dir.path().join("homecloud-qemu-arm64.img");
        Built { _dir: dir, img }
    })
}

fn boot(img: &Path, work: &Path, mac: &str) -> Guest {
    Guest::start(&GuestOpts {
        machine: Machine::Arm64,
        image: img.to_path_buf(),
        workdir: work.to_path_buf(),
        disk_size: 4 << 30,
        memory_mib: 1024,
        cpus: 1,
        mac: mac.into(),
        reuse_disk: false,
    })
    .expect("starting QEMU")
}

#[test]
fn default_image_boots_via_uboot_extlinux_and_devices_differ() {
    let b = image();
    let w1 = tempfile::tempdir().expect("tempdir");
    let w2 = tempfile::tempdir().expect("tempdir");
    // Two copies of one image, booted side by side.
    let mut g1 = boot(&b.img, w1.path(), "52:54:00:12:34:01");
    let mut g2 = boot(&b.img, w2.path(), "52:54:00:12:34:02");
    let v1 = g1
        .wait_for("HC-VERDICT", Duration::from_secs(900))
        .expect("guest 1 verdict");
    let t1 = g1.elapsed();
    let v2 = g2
        .wait_for("HC-VERDICT", Duration::from_secs(900))
        .expect("guest 2 verdict");
    eprintln!("guest 1 verdict after {:.0}s: {v1}", t1.as_secs_f64());
    eprintln!(
        "guest 2 verdict after {:.0}s: {v2}",
        g2.elapsed().as_secs_f64()
    );
    let console = g1.console_text();
    assert!(
        console.contains("/boot/extlinux/extlinux.conf"),
        "U-Boot did not read extlinux.conf:\n{console}"
    );
    let (f1, f2) = (fields(&v1), fields(&v2));
    for (f, name) in [(&f1, "node1"), (&f2, "node2")] {
        assert_eq!(f["state"], "running", "{f:?}");
        assert_eq!(f["failed"], "", "failed units: {f:?}");
        assert_eq!(f["machine-id"].len(), 32, "{f:?}");
        assert!(!f["ssh-ed25519"].is_empty(), "no SSH host key: {f:?}");
        // homecloud.toml on HCBOOT names the node by its MAC.
        assert_eq!(f["hostname"], name, "{f:?}");
        assert_eq!(f["stamp"], "yes", "agent did not converge: {f:?}");
        // The root filesystem grew into the 4 GiB disk.
        let root: u64 = f["root-fs-bytes"].parse().expect("root size");
        assert!(root > 3 << 30, "root not grown: {f:?}");
    }
    assert_ne!(f1["machine-id"], f2["machine-id"]);
    assert_ne!(f1["ssh-ed25519"], f2["ssh-ed25519"]);
    g1.wait_exit(Duration::from_secs(120))
        .expect("guest 1 powers off");
    g2.wait_exit(Duration::from_secs(120))
        .expect("guest 2 powers off");
}

#[test]
fn amd64_image_boots_with_ovmf_and_systemd_boot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_hc-image"))
        .args([
            "build",
            "--board",
            "amd64",
            "--extra-overlay",
            "test-oracle",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .expect("running hc-image");
    assert!(
        out.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = dir.path().join("homecloud-amd64.img");
    let w = tempfile::tempdir().expect("tempdir");
    let mut g = Guest::start(&GuestOpts {
        machine: Machine::Amd64,
        image: img,
        workdir: w.path().to_path_buf(),
        disk_size: 4 << 30,
        memory_mib: 1024,
        cpus: 1,
        mac: "52:54:00:12:34:03".into(),
        reuse_disk: false,
    })
    .expect("starting QEMU");
    let v = g
        .wait_for("HC-VERDICT", Duration::from_secs(900))
        .expect("verdict");
    eprintln!("amd64 verdict after {:.0}s: {v}", g.elapsed().as_secs_f64());
    let f = fields(&v);
    assert_eq!(f["state"], "running", "{f:?}");
    assert_eq!(f["failed"], "", "failed units: {f:?}");
    assert_eq!(f["hostname"], "node3", "{f:?}");
    assert_eq!(f["stamp"], "yes", "{f:?}");
    g.wait_exit(Duration::from_secs(120)).expect("powers off");
}
