// SPDX-License-Identifier: Apache-2.0
//! `hc-image flash` on real block devices: loop devices over sparse files
//! (root needed, as in CI). The image is a real `hc-image build` output
//! (.img, .img.zst, .img.bmap, SHA256SUMS, manifest.json) of the fixture
//! rootfs, built once for the whole binary. The "card" is first filled with
//! an old card's garbage, so the unmapped ranges the flash skips are not
//! zero by luck.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hc_tests::rootfs::write_rootfs_fixture;
use hc_tests::{command, pattern_bytes, run, sha256_file};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hc-image"))
}

fn cache_dir() -> PathBuf {
    std::env::var_os("HC_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("hc-image")))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/hc-image")
        })
}

/// The built image, shared by every test of this binary.
struct Image {
    dir: tempfile::TempDir,
    img: PathBuf,
    zst: PathBuf,
    bmap: PathBuf,
    size: u64,
    manifest: Value,
    /// Mapped ranges (start, end) in bytes, from the bmap.
    ranges: Vec<(u64, u64)>,
}

fn image() -> &'static Image {
    static I: OnceLock<Image> = OnceLock::new();
    I.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = dir.path().join("rootfs.tar");
        write_rootfs_fixture(&tar).expect("fixture tarball");
        let out = dir.path().join("out");
        let o = Command::new(bin())
            .args(["-q", "build", "--board", "qemu-arm64", "--rootfs"])
            .arg(&tar)
            .arg("--out")
            .arg(&out)
            .env("HC_CACHE_DIR", cache_dir())
            .output()
            .expect("running hc-image build");
        assert!(
            o.status.success(),
            "build failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let img = out.join("homecloud-qemu-arm64.img");
        let bmap = out.join("homecloud-qemu-arm64.img.bmap");
        let text = std::fs::read_to_string(&bmap).expect("bmap");
        let mut ranges = Vec::new();
        for l in text.lines().filter(|l| l.contains("<Range")) {
            let body = l
                .split('>')
                .nth(1)
                .expect("range")
                .split('<')
                .next()
                .expect("range");
            let (a, b) = body
                .trim()
                .split_once('-')
                .unwrap_or((body.trim(), body.trim()));
            let (a, b): (u64, u64) = (a.parse().expect("block"), b.parse().expect("block"));
            ranges.push((a * 4096, (b + 1) * 4096));
        }
        let size = std::fs::metadata(&img).expect("img").len();
        for r in &mut ranges {
            r.1 = r.1.min(size);
        }
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).expect("manifest"))
                .expect("manifest JSON");
        Image {
            zst: out.join("homecloud-qemu-arm64.img.zst"),
            img,
            bmap,
            size,
            manifest,
            ranges,
            dir,
        }
    })
}

/// A loop device over a sparse file; detached (and the file removed) on
/// drop, also when the test panics.
struct Loop {
    dev: PathBuf,
    _dir: tempfile::TempDir,
    parts: bool,
}

impl Loop {
    fn new(size: u64) -> Loop {
        Self::with(size, &[])
    }

    fn with(size: u64, extra: &[&str]) -> Loop {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("card.img");
        std::fs::File::create(&file)
            .expect("create")
            .set_len(size)
            .expect("size");
        let out = run(command("losetup")
            .expect("losetup")
            .args(["-f", "--show"])
            .args(extra)
            .arg(&file))
        .expect("losetup -f (run the tests as root)");
        Loop {
            dev: PathBuf::from(out.trim()),
            _dir: dir,
            parts: false,
        }
    }

    /// An old card: every 4 KiB block holds non-zero garbage.
    fn used(size: u64) -> Loop {
        let l = Loop::new(size);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&l.dev)
            .expect("open loop");
        let junk = pattern_bytes(42, 4 * MIB as usize);
        let mut off = 0;
        while off < size {
            let n = (size - off).min(junk.len() as u64) as usize;
            f.write_all_at(&junk[..n], off).expect("write junk");
            off += n as u64;
        }
        f.sync_all().expect("sync");
        l
    }

    fn hash(&self) -> String {
        sha256_file(&self.dev).expect("hash device")
    }

    fn read(&self, off: u64, len: u64) -> Vec<u8> {
        let f = std::fs::File::open(&self.dev).expect("open loop");
        let mut b = vec![0u8; len as usize];
        f.read_exact_at(&mut b, off).expect("read loop");
        b
    }

    /// Partition nodes (/dev/loopNpM): this kernel may not scan tables.
    fn partitions(&mut self) {
        run(command("partx").expect("partx").arg("-a").arg(&self.dev)).expect("partx -a");
        self.parts = true;
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if self.parts {
            let _ = Command::new("partx").arg("-d").arg(&self.dev).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn flash(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.arg("flash").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running hc-image flash")
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn expect_exit(o: &Output, code: i32, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {e}");
    for n in needles {
        assert!(e.contains(n), "{n:?} not in stderr: {e}");
    }
}

fn part(m: &Value, n: usize) -> (u64, u64) {
    let p = &m["disk"]["partitions"][n];
    (
        p["start"].as_u64().expect("start"),
        p["size"].as_u64().expect("size"),
    )
}

/// The card's bytes equal the image's over every mapped range; its table
/// and filesystems pass sfdisk, e2fsck -fn and fsck.vfat -n.
fn check_card(l: &Loop, im: &Image) {
    let img = std::fs::File::open(&im.img).expect("open img");
    for &(s, e) in &im.ranges {
        let mut want = vec![0u8; (e - s) as usize];
        img.read_exact_at(&mut want, s).expect("read img");
        assert!(l.read(s, e - s) == want, "device differs in {s}..{e}");
    }
    let sf: Value = serde_json::from_str(
        &run(command("sfdisk").expect("sfdisk").arg("--json").arg(&l.dev)).expect("sfdisk --json"),
    )
    .expect("sfdisk JSON");
    for n in 0..2 {
        let (start, size) = part(&im.manifest, n);
        assert_eq!(
            sf["partitiontable"]["partitions"][n]["start"].as_u64(),
            Some(start / 512)
        );
        assert_eq!(
            sf["partitiontable"]["partitions"][n]["size"].as_u64(),
            Some(size / 512)
        );
    }
    let (boot, boot_len) = part(&im.manifest, 0);
    let (root, root_len) = part(&im.manifest, 1);
    let off = |o: u64, n: u64| Loop::with_offset(&l.dev, o, n);
    let b = off(boot, boot_len);
    run(command("fsck.vfat")
        .expect("fsck.vfat")
        .arg("-n")
        .arg(&b.dev))
    .expect("fsck.vfat -n on the card's HCBOOT");
    let r = off(root, root_len);
    run(command("e2fsck").expect("e2fsck").arg("-fn").arg(&r.dev))
        .expect("e2fsck -fn on the card's root");
}

impl Loop {
    /// A read-only loop device over part of another device.
    fn with_offset(dev: &Path, off: u64, len: u64) -> Loop {
        let out = run(command("losetup")
            .expect("losetup")
            .args(["-f", "--show", "-r", "--offset"])
            .arg(off.to_string())
            .arg("--sizelimit")
            .arg(len.to_string())
            .arg(dev))
        .expect("losetup --offset");
        Loop {
            dev: PathBuf::from(out.trim()),
            _dir: tempfile::tempdir().expect("tempdir"),
            parts: false,
        }
    }
}

#[test]
fn flashes_a_built_zst_onto_a_used_card_and_it_checks_clean() {
    let im = image();
    let l = Loop::used(im.size + 8 * MIB);
    let t = Instant::now();
    let o = flash(
        &[
            os("--yes"),
            os("--force"),
            im.zst.as_os_str(),
            l.dev.as_os_str(),
        ],
        &[],
    );
    // The build's .zst is seekable: the holes' frames are never decompressed.
    expect_exit(
        &o,
        0,
        &["verified", "frames (the rest hold no mapped block)"],
    );
    let e = stderr(&o);
    let counts: Vec<u64> = e
        .split("decompressing ")
        .nth(1)
        .and_then(|t| t.split(" frames").next())
        .map(|t| t.split(" of ").filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    assert!(
        counts.len() == 2 && counts[0] < counts[1],
        "every frame decompressed: {e}"
    );
    eprintln!(
        "BENCH flash .img.zst of {} MiB: {:.2}s",
        im.size / MIB,
        t.elapsed().as_secs_f64()
    );
    check_card(&l, im);
}

#[test]
fn flashes_raw_and_xz_images() {
    let im = image();
    let l = Loop::used(im.size);
    let o = flash(
        &[
            os("-y"),
            os("--force"),
            im.img.as_os_str(),
            l.dev.as_os_str(),
        ],
        &[],
    );
    expect_exit(&o, 0, &["verified"]);
    check_card(&l, im);

    // .img.xz: the bmap is found beside it (X.img.bmap); no sum lists it.
    let dir = tempfile::tempdir().expect("tempdir");
    let xz = dir.path().join("homecloud-qemu-arm64.img.xz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xz -0 -T2 -c {} > {}",
            im.img.display(),
            xz.display()
        ))
        .status()
        .expect("xz");
    assert!(st.success());
    std::fs::copy(&im.bmap, dir.path().join("homecloud-qemu-arm64.img.bmap")).expect("copy bmap");
    let l = Loop::used(im.size);
    let o = flash(
        &[os("-y"), os("--force"), xz.as_os_str(), l.dev.as_os_str()],
        &[],
    );
    expect_exit(&o, 0, &["verified", "cannot be checked before writing"]);
    check_card(&l, im);
}

/// A copy of the artifacts in a fresh directory, to damage.
fn copy_artifacts() -> tempfile::TempDir {
    let im = image();
    let d = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(im.dir.path().join("out")).expect("out") {
        let p = e.expect("entry").path();
        std::fs::copy(&p, d.path().join(p.file_name().expect("name"))).expect("copy");
    }
    d
}

#[test]
fn a_flipped_byte_in_the_zst_is_refused_before_anything_is_written() {
    let im = image();
    let d = copy_artifacts();
    let zst = d.path().join(im.zst.file_name().expect("name"));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&zst)
        .expect("open");
    let mid = f.metadata().expect("meta").len() / 2;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, mid).expect("read");
    f.write_all_at(&[b[0] ^ 0x01], mid).expect("write");
    drop(f);
    let l = Loop::used(im.size);
    let before = l.hash();
    let o = flash(
        &[os("-y"), os("--force"), zst.as_os_str(), l.dev.as_os_str()],
        &[],
    );
    expect_exit(&o, 2, &["SHA256SUMS", "nothing was written"]);
    assert_eq!(l.hash(), before, "the device changed");

    // A damaged bmap (still self-consistent or not) is refused too.
    let d = copy_artifacts();
    let bmap = d.path().join(im.bmap.file_name().expect("name"));
    let text = std::fs::read_to_string(&bmap).expect("bmap");
    std::fs::write(
        &bmap,
        text.replacen("<BlockSize> 4096 ", "<BlockSize>  4096", 1),
    )
    .expect("write");
    let zst = d.path().join(im.zst.file_name().expect("name"));
    let o = flash(
        &[os("-y"), os("--force"), zst.as_os_str(), l.dev.as_os_str()],
        &[],
    );
    expect_exit(&o, 2, &["bmap"]);
    assert_eq!(l.hash(), before, "the device changed");
}

#[test]
fn a_range_changed_on_the_card_before_the_read_back_fails_verify() {
    let im = image();
    let l = Loop::new(im.size);
    let &(s, e) = im
        .ranges
        .iter()
        .find(|(s, _)| *s >= MIB)
        .expect("a range past the first MiB");
    let at = (s + (e - s) / 2).to_string();
    let o = flash(
        &[
            os("-y"),
            os("--force"),
            im.zst.as_os_str(),
            l.dev.as_os_str(),
        ],
        &[("HC_FLASH_TEST_CORRUPT_BEFORE_VERIFY", &at)],
    );
    expect_exit(&o, 1, &["verify failed", &format!("{s}..{e}")]);
}

#[test]
fn every_refusal_exits_2_and_writes_nothing() {
    let im = image();
    let zst = im.zst.as_os_str();

    // Non-removable (every loop device) without --force.
    let l = Loop::used(im.size);
    let before = l.hash();
    let o = flash(&[os("-y"), zst, l.dev.as_os_str()], &[]);
    expect_exit(&o, 2, &["not a removable disk", "--force"]);
    // No --yes and stdin is not a terminal.
    let o = flash(&[os("--force"), zst, l.dev.as_os_str()], &[]);
    expect_exit(&o, 2, &["not a terminal", "--yes"]);
    // An invalid --config.
    let d = tempfile::tempdir().expect("tempdir");
    let bad = d.path().join("homecloud.toml");
    std::fs::write(&bad, "schema = 1\nbogus_key = 3\n").expect("write");
    let o = flash(
        &[
            os("-y"),
            os("--force"),
            os("--config"),
            bad.as_os_str(),
            zst,
            l.dev.as_os_str(),
        ],
        &[],
    );
    expect_exit(&o, 2, &["homecloud.toml"]);
    assert_eq!(l.hash(), before, "the device changed");

    // Too small.
    let small = Loop::used(im.size - MIB);
    let before_small = small.hash();
    let o = flash(&[os("-y"), os("--force"), zst, small.dev.as_os_str()], &[]);
    expect_exit(&o, 2, &["the image needs", "use a card of at least"]);
    assert_eq!(small.hash(), before_small, "the small device changed");

    // Not a block device.
    let f = d.path().join("file.img");
    std::fs::write(&f, vec![1u8; 4096]).expect("write");
    let o = flash(&[os("-y"), os("--force"), zst, f.as_os_str()], &[]);
    expect_exit(&o, 2, &["not a block device", "--list"]);
    assert_eq!(std::fs::read(&f).expect("read"), vec![1u8; 4096]);

    // A mounted partition: flash the card, mount its root, flash again.
    let mut l = Loop::new(im.size);
    let o = flash(
        &[
            os("-y"),
            os("--force"),
            os("--no-verify"),
            zst,
            l.dev.as_os_str(),
        ],
        &[],
    );
    expect_exit(&o, 0, &[]);
    l.partitions();
    let mnt = tempfile::tempdir().expect("tempdir");
    let p2 = format!("{}p2", l.dev.display());
    run(command("mount")
        .expect("mount")
        .args(["-o", "ro"])
        .arg(&p2)
        .arg(mnt.path()))
    .expect("mount the card's root");
    let before = l.hash();
    let o = flash(&[os("-y"), os("--force"), zst, l.dev.as_os_str()], &[]);
    let _ = Command::new("umount").arg(mnt.path()).status();
    expect_exit(&o, 2, &["is mounted at", "umount"]);
    assert_eq!(l.hash(), before, "the device changed");
    // Its partition instead of the whole disk.
    let o = flash(&[os("-y"), os("--force"), zst, os(&p2)], &[]);
    expect_exit(&o, 2, &["not a whole disk"]);
}

#[test]
fn config_replaces_homecloud_toml_on_hcboot() {
    let im = image();
    let l = Loop::new(im.size);
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = d.path().join("homecloud.toml");
    let text = std::fs::read_to_string(repo().join("examples/homecloud.toml")).expect("example")
        + "\n# this card was flashed with --config\n";
    std::fs::write(&cfg, &text).expect("write");
    let o = flash(
        &[
            os("-y"),
            os("--force"),
            os("--config"),
            cfg.as_os_str(),
            im.zst.as_os_str(),
            l.dev.as_os_str(),
        ],
        &[],
    );
    expect_exit(&o, 0, &["replaced homecloud.toml"]);
    let (boot, _) = part(&im.manifest, 0);
    let back = run(Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{boot}", l.dev.display()))
        .arg("::/homecloud.toml"))
    .expect("mtype");
    assert_eq!(back, text);
}

#[test]
fn sigint_during_the_write_leaves_the_first_mib_zeroed() {
    let im = image();
    let l = Loop::used(im.size);
    let mut child = Command::new(bin())
        .args(["flash", "-y", "--force"])
        .arg(&im.zst)
        .arg(&l.dev)
        .env("HC_FLASH_TEST_WINDOW_DELAY_MS", "300")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).expect("read stderr") == 0 || Instant::now() > deadline {
            panic!("flash never started writing: {seen}");
        }
        seen.push_str(&line);
        if line.contains("writing") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(700));
    let pid = child.id().to_string();
    run(Command::new("kill").args(["-INT", &pid])).expect("kill -INT");
    let mut rest = String::new();
    err.read_to_string(&mut rest).expect("read stderr");
    let st = child.wait().expect("wait");
    seen.push_str(&rest);
    assert!(!st.success(), "flash succeeded despite SIGINT: {seen}");
    assert!(seen.contains("incomplete"), "{seen}");
    assert!(seen.contains("signal 2"), "{seen}");
    assert!(
        l.read(0, MIB).iter().all(|&b| b == 0),
        "first MiB not zero after SIGINT"
    );
}
