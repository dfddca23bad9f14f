// SPDX-License-Identifier: Apache-2.0
//! Building `hc-firstboot` for the board's architecture (build host).
//!
//! amd64 builds with the host's cargo. arm64 uses a rustup target when one is
//! installed, else Debian trixie's rustc with `libstd-rust-dev:arm64` in a
//! cached mmdebstrap chroot, offline, from crates vendored on the host. The
//! binary is cached by the hash of the agent's sources and the lockfile.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::blobs::cache_dir;
use crate::exec;
use crate::spec::Arch;

/// Agent binaries ship without debug info: they go onto small SD cards.
const PROFILE_ENV: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
    ("CARGO_PROFILE_RELEASE_STRIP", "symbols"),
];

const TOOLCHAIN_PACKAGES: &str =
    "rustc,cargo,libstd-rust-dev:arm64,gcc-aarch64-linux-gnu,libc6-dev-arm64-cross,ca-certificates";

fn hash_tree(h: &mut Sha256, root: &Path, dir: &Path) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            hash_tree(h, root, &p)?;
        } else {
            h.update(
                p.strip_prefix(root)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .as_bytes(),
            );
            h.update([0]);
            h.update(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
        }
    }
    Ok(())
}

/// Hash of everything the agent binary is made from.
pub fn source_key(repo: &Path, arch: Arch) -> Result<String> {
    let mut h = Sha256::new();
    h.update(arch.debian().as_bytes());
    h.update(TOOLCHAIN_PACKAGES.as_bytes());
    h.update(format!("{PROFILE_ENV:?}").as_bytes());
    for f in ["Cargo.toml", "Cargo.lock"] {
        h.update(std::fs::read(repo.join(f)).with_context(|| format!("reading {f}"))?);
    }
    hash_tree(&mut h, &repo.join("firstboot"), &repo.join("firstboot/src"))?;
    h.update(
        std::fs::read(repo.join("firstboot/Cargo.toml")).context("reading firstboot/Cargo.toml")?,
    );
    Ok(hex::encode(h.finalize()))
}

/// The source tree this hc-image was built from: the agent is built from it.
pub fn source_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Test seam: a ready `hc-firstboot` to ship instead of building one.
pub const BINARY_ENV: &str = "HC_AGENT_BINARY";

/// The `hc-firstboot` a build ships for `arch`: the file named by
/// `HC_AGENT_BINARY` when set (a test seam: the golden tests pin the agent's
/// bytes so images do not follow firstboot/src), else [`ensure`]'s build
/// from this source tree. The file goes into the image as it is, like a
/// built one; nothing checks its architecture.
pub fn binary(arch: Arch) -> Result<PathBuf> {
    match std::env::var_os(BINARY_ENV) {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!(
                    "{BINARY_ENV}={} is not a file: unset it to build the agent from source",
                    p.display()
                );
            }
            tracing::warn!(
                "shipping {} as hc-firstboot ({BINARY_ENV} is set), not a build of firstboot/src",
                p.display()
            );
            Ok(p)
        }
        _ => ensure(&source_root(), arch),
    }
}

/// Returns the path of a cached `hc-firstboot` for `arch`, building it if needed.
pub fn ensure(repo: &Path, arch: Arch) -> Result<PathBuf> {
    if !repo.join("firstboot/src").is_dir() {
        bail!(
            "the hc-firstboot sources are not at {}: run hc-image from its source checkout",
            repo.display()
        );
    }
    let key = source_key(repo, arch)?;
    let dir = cache_dir().join("agent");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(format!("hc-firstboot-{}-{}", arch.debian(), &key[..16]));
    let _lock = crate::sys::lock(&dir.join(".lock"))
        .with_context(|| format!("locking {}", dir.display()))?;
    if out.is_file() {
        return Ok(out);
    }
    let t = std::time::Instant::now();
    let bin = match (arch, std::env::consts::ARCH) {
        (Arch::Amd64, "x86_64") | (Arch::Arm64, "aarch64") => native(repo)?,
        (Arch::Arm64, _) => cross_arm64(repo)?,
        (a, host) => bail!(
            "cannot build hc-firstboot for {} on a {host} host",
            a.debian()
        ),
    };
    let partial = crate::io::partial(&out);
    std::fs::copy(&bin, &partial).with_context(|| format!("copying {}", bin.display()))?;
    std::fs::rename(&partial, &out).with_context(|| format!("renaming to {}", out.display()))?;
    tracing::info!(
        "built hc-firstboot for {} in {:.0}s",
        arch.debian(),
        t.elapsed().as_secs_f64()
    );
    Ok(out)
}

fn native(repo: &Path) -> Result<PathBuf> {
    let target = cache_dir().join("agent/target-native");
    exec::run(
        Command::new("cargo")
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "hc-firstboot",
                "--bin",
                "hc-firstboot",
            ])
            .arg("--target-dir")
            .arg(&target)
            .envs(PROFILE_ENV.iter().copied())
            .current_dir(repo),
    )?;
    Ok(target.join("release/hc-firstboot"))
}

fn rustup_has_aarch64() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("aarch64-unknown-linux-gnu"))
        .unwrap_or(false)
}

fn cross_arm64(repo: &Path) -> Result<PathBuf> {
    if rustup_has_aarch64() && Path::new("/usr/bin/aarch64-linux-gnu-gcc").exists() {
        let target = cache_dir().join("agent/target-rustup");
        exec::run(
            Command::new("cargo")
                .args([
                    "build",
                    "--release",
                    "--locked",
                    "-p",
                    "hc-firstboot",
                    "--bin",
                    "hc-firstboot",
                ])
                .args(["--target", "aarch64-unknown-linux-gnu"])
                .arg("--target-dir")
                .arg(&target)
                .env(
                    "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                    "aarch64-linux-gnu-gcc",
                )
                .envs(PROFILE_ENV.iter().copied())
                .current_dir(repo),
        )?;
        return Ok(target.join("aarch64-unknown-linux-gnu/release/hc-firstboot"));
    }
    let chroot = toolchain()?;
    // Sources and vendored crates go into the chroot; it never downloads.
    let src = chroot.join("src");
    if src.exists() {
        std::fs::remove_dir_all(&src).with_context(|| format!("removing {}", src.display()))?;
    }
    std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    exec::run(
        Command::new("cargo")
            .args(["vendor", "--locked", "--versioned-dirs", "-q"])
            .arg(src.join("vendor"))
            .current_dir(repo),
    )
    .context("vendoring crates for the offline arm64 build")?;
    // qemu/ is the agent's dev-dependency (engine tests): cargo needs its manifest.
    exec::run(
        Command::new("cp")
            .arg("-r")
            .arg(repo.join("firstboot"))
            .arg(repo.join("qemu"))
            .arg(&src),
    )?;
    exec::run(Command::new("cp").arg(repo.join("Cargo.lock")).arg(&src))?;
    let root_toml =
        std::fs::read_to_string(repo.join("Cargo.toml")).context("reading Cargo.toml")?;
    let mut ws = String::new();
    let mut in_ws = false;
    for line in root_toml.lines() {
        if line.starts_with("members") {
            ws.push_str("members = [\"firstboot\", \"qemu\"]\n");
        } else if line.starts_with("default-members") {
            continue;
        } else {
            ws.push_str(line);
            ws.push('\n');
        }
        in_ws |= line == "[workspace]";
    }
    anyhow::ensure!(in_ws, "Cargo.toml has no [workspace]");
    std::fs::write(src.join("Cargo.toml"), ws).context("writing the chroot workspace")?;
    std::fs::create_dir_all(src.join(".cargo")).context("creating .cargo")?;
    std::fs::write(
        src.join(".cargo/config.toml"),
        "[source.crates-io]\nreplace-with = \"vendored\"\n[source.vendored]\ndirectory = \"vendor\"\n[target.aarch64-unknown-linux-gnu]\nlinker = \"aarch64-linux-gnu-gcc\"\n",
    )
    .context("writing cargo config")?;
    exec::run(
        Command::new("chroot")
            .arg(&chroot)
            .args(["/bin/sh", "-c", "cd /src && HOME=/tmp cargo build --release --offline -p hc-firstboot --bin hc-firstboot --target aarch64-unknown-linux-gnu --target-dir target"])
            // The host's build directory (scripts/test sets one) is not
            // a path in the chroot; the binary is read from /src/target.
            .env_remove("CARGO_TARGET_DIR")
            .envs(PROFILE_ENV.iter().copied()),
    )
    .context("building hc-firstboot for arm64 with Debian's rustc")?;
    Ok(src.join("target/aarch64-unknown-linux-gnu/release/hc-firstboot"))
}

/// A trixie amd64 chroot with rustc and the arm64 standard library, cached.
fn toolchain() -> Result<PathBuf> {
    let dir = cache_dir().join("toolchain-trixie-rust-arm64");
    let ok = dir.join(".complete");
    if ok.is_file() {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    tracing::info!("making the arm64 cross toolchain chroot (Debian trixie rustc)");
    exec::run(
        Command::new("mmdebstrap")
            .args(["--variant=minbase", "--architectures=amd64,arm64"])
            .arg(format!("--include={TOOLCHAIN_PACKAGES}"))
            .arg("trixie")
            .arg(&dir)
            .arg(crate::spec::DEFAULT_MIRROR),
    )
    .context("making the toolchain chroot (apt-get install mmdebstrap; needs root for chroot)")?;
    std::fs::write(&ok, b"").context("marking the toolchain complete")?;
    Ok(dir)
}
