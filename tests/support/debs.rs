// SPDX-License-Identifier: Apache-2.0
//! Debian packages a guest test installs itself (lynis, hostapd): fetched
//! from Debian's mirror with a private apt state (the host's apt is left
//! alone) into a cache outside the clone, then carried into the guest on a
//! FAT disk labelled HCTEST. Never part of a built image.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The suite the images are built from (images/homecloud.toml).
const SUITE: &str = "trixie";

/// hc-image's cache (as the builder finds it), `test-debs/` in it.
fn cache_root() -> PathBuf {
    let base = match (
        std::env::var_os("HC_CACHE_DIR"),
        std::env::var_os("XDG_CACHE_HOME"),
    ) {
        (Some(d), _) => PathBuf::from(d),
        (None, Some(x)) => Path::new(&x).join("hc-image"),
        (None, None) => Path::new(&std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
            .join(".cache/hc-image"),
    };
    base.join("test-debs")
}

/// The newest `.deb` of each of `packages` for `arch`, downloaded once.
pub fn fetch(arch: &str, packages: &[&str]) -> Result<Vec<PathBuf>> {
    let d = cache_root().join(format!("{SUITE}-{arch}"));
    let debs = d.join("debs");
    let have = |p: &str| -> Option<PathBuf> {
        std::fs::read_dir(&debs)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{p}_")) && n.ends_with(".deb"))
            })
    };
    if packages.iter().all(|p| have(p).is_some()) {
        return packages
            .iter()
            .map(|p| Ok(have(p).unwrap_or_default()))
            .collect();
    }
    for sub in [
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
        "debs",
    ] {
        std::fs::create_dir_all(d.join(sub))
            .with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(d.join("var/lib/dpkg/status"), "")?;
    std::fs::write(
        d.join("etc/apt/sources.list"),
        format!("deb http://deb.debian.org/debian {SUITE} main\n"),
    )?;
    let apt = |args: &[&str]| -> Result<()> {
        let out = Command::new("apt-get")
            .current_dir(&debs)
            .env("APT_CONFIG", "/nonexistent")
            .args(["-q", "-o"])
            .arg(format!("Dir={}", d.display()))
            .arg("-o")
            .arg(format!("Dir::Etc={}/etc/apt", d.display()))
            .arg("-o")
            .arg(format!(
                "Dir::State::status={}/var/lib/dpkg/status",
                d.display()
            ))
            .args(["-o", &format!("APT::Architecture={arch}")])
            .args(["-o", &format!("APT::Architectures::={arch}")])
            .args([
                "-o",
                "Dir::Etc::trusted=/usr/share/keyrings/debian-archive-keyring.gpg",
                "-o",
                "Dir::Etc::trustedparts=/nonexistent",
                "-o",
                "Debug::NoLocking=1",
            ])
            .args(args)
            .output()
            .context("running apt-get (apt-get install apt)")?;
        if !out.status.success() {
            bail!(
                "apt-get {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    apt(&["update"])?;
    let mut args = vec!["download"];
    args.extend_from_slice(packages);
    apt(&args)?;
    packages
        .iter()
        .map(|p| {
            have(p).with_context(|| format!("apt-get download {p}: no .deb in {}", debs.display()))
        })
        .collect()
}

/// A FAT disk image labelled HCTEST holding `files`, for a guest's
/// second drive (the test oracle mounts it by label).
pub fn fat_disk(path: &Path, files: &[PathBuf]) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let st = Command::new("mkfs.vfat")
        .args(["-C", "-n", "HCTEST"])
        .arg(path)
        .arg("65536")
        .output()
        .context("mkfs.vfat (apt-get install dosfstools)")?;
    if !st.status.success() {
        bail!("mkfs.vfat: {}", String::from_utf8_lossy(&st.stderr));
    }
    for f in files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .context("file name")?
            // FAT has no ':' or '%' worries for mtools, but keep names plain.
            .replace("%3a", "_");
        let st = Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(path)
            .arg(f)
            .arg(format!("::{name}"))
            .output()
            .context("mcopy (apt-get install mtools)")?;
        if !st.status.success() {
            bail!(
                "mcopy {}: {}",
                f.display(),
                String::from_utf8_lossy(&st.stderr)
            );
        }
    }
    Ok(())
}
