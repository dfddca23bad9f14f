// SPDX-License-Identifier: Apache-2.0
//! `hc-image bench flash`: the same image to the same loop device with
//! `dd bs=4M conv=fsync`, `bmaptool copy` (which checks every range's
//! sha256 as it reads the image) and `hc-image flash` with and without its
//! read-back, in one run, as times and ratios.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::exec;
use crate::flash::cli::BenchFlashArgs;
use crate::size::MIB;

/// A loop device over a sparse file, detached and removed on drop.
pub struct Loop {
    pub dev: PathBuf,
    file: PathBuf,
}

impl Loop {
    pub fn new(file: &Path, size: u64) -> Result<Loop> {
        let f =
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
        f.set_len(size)
            .with_context(|| format!("sizing {}", file.display()))?;
        let out = exec::run(Command::new("losetup").args(["-f", "--show"]).arg(file))
            .context("attaching a loop device (needs root and util-linux)")?;
        Ok(Loop {
            dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            file: file.to_path_buf(),
        })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = std::fs::remove_file(&self.file);
    }
}

fn beside(img: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", img.display()))
}

/// The image to flash: given, or built once from a generated rootfs.
fn image(a: &BenchFlashArgs) -> Result<PathBuf> {
    if let Some(p) = &a.image {
        return Ok(p.clone());
    }
    let dir = a.out.join("image-2GiB");
    let img = dir.join("homecloud-qemu-arm64.img");
    if img.exists() && beside(&img, ".zst").exists() && beside(&img, ".bmap").exists() {
        return Ok(img);
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let tar = a.out.join(format!("synthetic-{}MiB.tar", a.size_mib));
    if !tar.exists() {
        eprintln!("generating {}", tar.display());
        crate::dev::bench::synthetic_rootfs(&tar, a.size_mib)?;
    }
    let dirs = crate::spec::DataDirs::locate();
    eprintln!("building the qemu-arm64 image from {}", tar.display());
    let r = crate::pipeline::build(&crate::pipeline::BuildOpts {
        board: "qemu-arm64".into(),
        config: dirs.root.join("examples/homecloud.toml"),
        image: "homecloud".into(),
        rootfs: Some(tar),
        base: None,
        base_sha256: None,
        out: dir,
        // The default image's shape: a 2 GiB disk, mostly holes.
        root_size: Some(
            "1968MiB"
                .parse()
                .map_err(|e| anyhow::anyhow!("root size: {e}"))?,
        ),
        extra_overlays: Vec::new(),
        refresh_base: false,
        cluster_secret: None,
    })?;
    Ok(r.image)
}

fn timed(cmd: &mut Command) -> Result<f64> {
    exec::run(&mut Command::new("sync"))?;
    let t = Instant::now();
    exec::run(cmd)?;
    Ok(t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Makes the command of one benchmarked tool.
type CommandFn<'a> = Box<dyn Fn() -> Command + 'a>;

pub fn run(a: &BenchFlashArgs) -> Result<()> {
    let img = image(a)?;
    let zst = beside(&img, ".zst");
    let bmap = beside(&img, ".bmap");
    let size = std::fs::metadata(&img)
        .with_context(|| format!("reading {}", img.display()))?
        .len();
    let b = crate::flash::source::load_bmap(&bmap)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let lo = Loop::new(&a.out.join("card.img"), size)?;
    // Every tool reads a warm image: the read of the image is not measured.
    for p in [&img, &zst] {
        std::io::copy(
            &mut std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
            &mut std::io::sink(),
        )
        .with_context(|| format!("reading {}", p.display()))?;
    }
    let me = std::env::current_exe().context("locating hc-image")?;
    let ours = |src: &Path, verify: bool| {
        let mut c = Command::new(&me);
        c.args(["-q", "flash", "--yes", "--force"]);
        if !verify {
            c.arg("--no-verify");
        }
        c.arg(src).arg(&lo.dev);
        c
    };
    let dd = || {
        let mut c = Command::new("dd");
        c.arg(format!("if={}", img.display()))
            .arg(format!("of={}", lo.dev.display()))
            .args(["bs=4M", "conv=fsync", "status=none"]);
        c
    };
    let bmaptool = |src: &Path| {
        let mut c = Command::new("bmaptool");
        c.args(["-q", "copy", "--bmap"])
            .arg(&bmap)
            .arg(src)
            .arg(&lo.dev);
        c
    };
    let cases: Vec<(&str, CommandFn)> = vec![
        ("dd bs=4M conv=fsync (.img)", Box::new(dd)),
        (
            "bmaptool copy (.img, checks range hashes)",
            Box::new(|| bmaptool(&img)),
        ),
        (
            "bmaptool copy (.img.zst, checks range hashes)",
            Box::new(|| bmaptool(&zst)),
        ),
        (
            "hc-image flash --no-verify (.img)",
            Box::new(|| ours(&img, false)),
        ),
        (
            "hc-image flash (.img, read-back verify)",
            Box::new(|| ours(&img, true)),
        ),
        (
            "hc-image flash --no-verify (.img.zst)",
            Box::new(|| ours(&zst, false)),
        ),
        (
            "hc-image flash (.img.zst, read-back verify)",
            Box::new(|| ours(&zst, true)),
        ),
    ];
    let mut times = Vec::new();
    for (name, cmd) in &cases {
        let mut t = Vec::new();
        for _ in 0..a.runs.max(1) {
            t.push(timed(&mut cmd()).with_context(|| format!("running {name}"))?);
        }
        let m = median(t);
        eprintln!("{name}: {m:.2}s");
        times.push(m);
    }
    println!(
        "image: {} ({} MiB, {} MiB mapped in {} ranges), device {} (loop over a sparse file in {})",
        img.display(),
        size / MIB,
        b.mapped_bytes() / MIB,
        b.ranges.len(),
        lo.dev.display(),
        a.out.display()
    );
    for ((name, _), t) in cases.iter().zip(&times) {
        println!("{name:<48} {t:>7.2}s");
    }
    let (dd_t, bt_img, bt_zst) = (times[0], times[1], times[2]);
    for (i, label) in [(4, ".img"), (6, ".img.zst")] {
        let (nv, v) = (times[i - 1], times[i]);
        println!(
            "{label:<8} dd/ours: {:.1}x without verify, {:.1}x verified (goal >= 5x); \
             bmaptool(same input)/ours-verified: {:.2} (goal >= 1.0)",
            dd_t / nv,
            dd_t / v,
            if i == 4 { bt_img } else { bt_zst } / v
        );
    }
    println!(
        "load average: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}
