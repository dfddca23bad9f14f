// SPDX-License-Identifier: Apache-2.0
//! Support library for hc-image's end-to-end tests: fixture generators and
//! small helpers for driving host tools (e2fsprogs, sfdisk, xz, ...).

pub mod armbian;
pub mod debs;
pub mod dockerd;
pub mod image;
pub mod rootfs;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

/// Debian package that ships each host tool, for "missing tool" messages.
const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("mke2fs", "e2fsprogs"),
    ("mkfs.ext4", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("dumpe2fs", "e2fsprogs"),
    ("tune2fs", "e2fsprogs"),
    ("sfdisk", "fdisk"),
    ("mkfs.vfat", "dosfstools"),
    ("fsck.vfat", "dosfstools"),
    ("tar", "tar"),
    ("xz", "xz-utils"),
    ("zstd", "zstd"),
];

fn apt_hint(program: &str) -> String {
    let pkg = TOOL_PACKAGES
        .iter()
        .find(|(tool, _)| *tool == program)
        .map_or(program, |(_, pkg)| pkg);
    format!("apt-get install -y {pkg}")
}

/// Locates a host tool on `PATH`, falling back to the sbin directories that a
/// non-root `PATH` often lacks. The error names the apt-get command to run.
pub fn tool(program: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "host tool `{program}` not found; install it with: {}",
        apt_hint(program)
    )
}

/// A `Command` for a host tool found with [`tool`].
pub fn command(program: &str) -> anyhow::Result<Command> {
    Ok(Command::new(tool(program)?))
}

/// Runs `cmd` to completion and returns its stdout (lossy UTF-8). On failure
/// the error names the command and carries the last 1 KiB of its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    run_inner(cmd, None)
}

/// Like [`run`], feeding `input` to the command's stdin (e.g. sfdisk scripts).
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> anyhow::Result<String> {
    run_inner(cmd, Some(input))
}

fn run_inner(cmd: &mut Command, input: Option<&[u8]>) -> anyhow::Result<String> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let program = Path::new(cmd.get_program())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            bail!(
                "cannot run {cmd:?}: `{program}` not found; install it with: {}",
                apt_hint(&program)
            );
        }
        Err(e) => return Err(e).with_context(|| format!("spawning {cmd:?}")),
    };
    if let Some(input) = input {
        // Write from a thread so a chatty child cannot deadlock on a full pipe.
        let mut stdin = child.stdin.take().context("child stdin")?;
        let data = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for {cmd:?}"))?;
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("stdin writer panicked"))?
            .with_context(|| format!("writing stdin of {cmd:?}"))?;
        return check_output(cmd, out);
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {cmd:?}"))?;
    check_output(cmd, out)
}

fn check_output(cmd: &Command, out: std::process::Output) -> anyhow::Result<String> {
    if !out.status.success() {
        let tail_start = out.stderr.len().saturating_sub(1024);
        bail!(
            "{cmd:?} failed ({}); stderr tail:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr[tail_start..])
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Lower-case hex SHA-256 of a file's contents, streamed.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Deterministic pseudo-random bytes (xorshift64*), so fixtures carry
/// incompressible, never-all-zero content without a RNG dependency.
pub fn pattern_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}
