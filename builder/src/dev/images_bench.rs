// SPDX-License-Identifier: Apache-2.0
//! `hc-image bench images`: building every service image for one
//! architecture from an empty cache (downloads included), with the .debs
//! cached but no layers, and warm; the bytes the images add to a disk
//! image and to its `.img.zst`. Each run is this binary in a child process
//! with its own `HC_CACHE_DIR`, so the runs share nothing but the mirror.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cli::BenchImagesArgs;

fn build(cache: &Path, out: &Path, arch: &str) -> Result<f64> {
    let exe = std::env::current_exe().context("locating hc-image")?;
    let t = Instant::now();
    let o = Command::new(exe)
        .args(["-q", "images", "build", "--arch", arch, "--out"])
        .arg(out)
        .env("HC_CACHE_DIR", cache)
        .output()
        .context("running hc-image images build")?;
    if !o.status.success() {
        bail!(
            "images build failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(t.elapsed().as_secs_f64())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)
                .with_context(|| format!("copying {}", dest.display()))?;
        }
    }
    Ok(())
}

pub fn run(a: &BenchImagesArgs) -> Result<()> {
    let work = tempfile::tempdir().context("tempdir")?;
    let arch = a.arch.as_str();
    let mut cold = Vec::new();
    let mut debs_only = Vec::new();
    let mut warm = Vec::new();
    for i in 0..a.runs.max(1) {
        let cache = work.path().join(format!("cache-{i}"));
        cold.push(build(
            &cache,
            &work.path().join(format!("out-cold-{i}")),
            arch,
        )?);
        warm.push(build(
            &cache,
            &work.path().join(format!("out-warm-{i}")),
            arch,
        )?);
        let second = work.path().join(format!("cache-debs-{i}"));
        copy_dir(&cache.join("debs"), &second.join("debs"))?;
        debs_only.push(build(
            &second,
            &work.path().join(format!("out-debs-{i}")),
            arch,
        )?);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (c, d, w) = (med(&mut cold), med(&mut debs_only), med(&mut warm));
    let layout = work.path().join(format!("out-warm-0/oci-{arch}"));
    let mut bytes = 0u64;
    let mut zst = 0u64;
    for e in std::fs::read_dir(layout.join("blobs/sha256")).context("reading the layout")? {
        let data = std::fs::read(e?.path()).context("reading a blob")?;
        bytes += data.len() as u64;
        // The disk image's .img.zst compresses at level 3.
        zst += zstd::bulk::compress(&data, 3).context("zstd")?.len() as u64;
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "service images for {arch} (all recipes), medians of {} run(s):",
        a.runs.max(1)
    );
    println!("  cold (empty cache, downloads from the mirror): {c:.1} s");
    println!(
        "  .debs cached, layers built:                     {d:.1} s ({:.2}x cold)",
        d / c
    );
    println!(
        "  warm (layers cached):                           {w:.1} s ({:.2}x cold)",
        w / c
    );
    println!(
        "  OCI layout: {:.1} MiB of blobs (disk image), {:.1} MiB more in .img.zst",
        mib(bytes),
        mib(zst)
    );
    println!(
        "BENCH images arch={arch} cold_s={c:.2} debs_cached_s={d:.2} warm_s={w:.2} warm_ratio={:.3} layout_bytes={bytes} zst_bytes={zst}",
        w / c
    );
    Ok(())
}
