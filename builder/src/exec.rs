// SPDX-License-Identifier: Apache-2.0
//! Running host tools (build host). Every external program goes through
//! `run`, which attaches the tail of stderr to the error.

use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Tool names in one place so tests and messages agree.
pub mod tools {
    pub const MKE2FS: &str = "mke2fs";
    pub const E2FSCK: &str = "e2fsck";
    pub const DEBUGFS: &str = "debugfs";
    pub const RESIZE2FS: &str = "resize2fs";
    pub const MKFS_VFAT: &str = "mkfs.vfat";
    pub const FSCK_VFAT: &str = "fsck.vfat";
    pub const MCOPY: &str = "mcopy";
    pub const MMD: &str = "mmd";
}

/// (tool, Debian package) pairs `build` needs.
pub const BUILD_TOOLS: &[(&str, &str)] = &[
    (tools::MKE2FS, "e2fsprogs"),
    (tools::E2FSCK, "e2fsprogs"),
    (tools::DEBUGFS, "e2fsprogs"),
    (tools::RESIZE2FS, "e2fsprogs"),
    (tools::MKFS_VFAT, "dosfstools"),
    (tools::FSCK_VFAT, "dosfstools"),
    (tools::MCOPY, "mtools"),
    (tools::MMD, "mtools"),
];

pub const INSTALL_HINT: &str = "apt-get install -t bookworm-backports e2fsprogs && apt-get install dosfstools mtools libarchive13 (or run .ci/install-deps, which adds bookworm-backports)";

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(1024);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

/// Runs `cmd` to completion; a non-zero exit becomes an error carrying the
/// command line and the last KiB of stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let desc = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {desc}"))?;
    if !out.status.success() {
        bail!("{desc} failed ({}): {}", out.status, tail(&out.stderr));
    }
    Ok(out)
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Checks the exit status of an already spawned child the same way `run` does.
pub fn finish(desc: &str, out: Output) -> Result<Output> {
    if !out.status.success() {
        bail!("{desc} failed ({}): {}", out.status, tail(&out.stderr));
    }
    Ok(out)
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(tool).is_file())
}

/// Fails with the install command when a required tool or version is missing.
pub fn check_host_tools() -> Result<()> {
    let missing: Vec<&str> = BUILD_TOOLS
        .iter()
        .filter(|(t, _)| !on_path(t))
        .map(|(t, _)| *t)
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing host tools: {}; install them with: {INSTALL_HINT}",
            missing.join(", ")
        );
    }
    let v = version(tools::MKE2FS);
    // `mke2fs -d` reads tar streams from 1.47.1 on.
    let ok = v
        .split_whitespace()
        .nth(1)
        .and_then(|n| {
            let p: Vec<u32> = n.split('.').filter_map(|x| x.parse().ok()).collect();
            Some((*p.first()?, *p.get(1)?, p.get(2).copied().unwrap_or(0)))
        })
        .is_some_and(|(a, b, c)| (a, b, c) >= (1, 47, 1));
    if !ok {
        bail!("{v:?} is too old: hc-image needs e2fsprogs >= 1.47.1 to read tar streams; install it with: {INSTALL_HINT}");
    }
    Ok(())
}

/// First line a tool prints about its version, for the manifest.
pub fn version(tool: &str) -> String {
    let flag = match tool {
        tools::MKE2FS | tools::E2FSCK | tools::DEBUGFS | tools::RESIZE2FS => "-V",
        tools::MKFS_VFAT | tools::FSCK_VFAT => "--help",
        _ => "--version",
    };
    let Ok(out) = Command::new(tool).arg(flag).stdin(Stdio::null()).output() else {
        return "not found".into();
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}
