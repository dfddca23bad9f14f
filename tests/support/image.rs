// SPDX-License-Identifier: Apache-2.0
//! One `hc-image build` as the end-to-end tests run it: the binary under
//! test (the caller passes `env!("CARGO_BIN_EXE_hc-image")`), an output
//! directory, and the options a test adds. The QEMU tests (boot, cluster) and
//! the golden test build through here.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The board `hc-image build` picks when none is given.
pub const DEFAULT_BOARD: &str = "qemu-arm64";

/// A build to run; [`ImageBuild::run`] runs it.
pub struct ImageBuild {
    cmd: Command,
    out: PathBuf,
    board: Option<String>,
}

/// A finished build.
#[derive(Debug)]
pub struct BuiltImage {
    /// `<out>/homecloud-<board>.img`
    pub img: PathBuf,
    /// `<out>/manifest.json`
    pub manifest: PathBuf,
    /// What the build logged.
    pub stderr: String,
}

impl ImageBuild {
    /// `hc-image build --out OUT`, the default board and config.
    pub fn new(bin: impl AsRef<OsStr>, out: &Path) -> Self {
        let mut cmd = Command::new(bin);
        cmd.arg("build");
        ImageBuild {
            cmd,
            out: out.to_path_buf(),
            board: None,
        }
    }

    /// `--board BOARD`.
    pub fn board(mut self, board: &str) -> Self {
        self.cmd.args(["--board", board]);
        self.board = Some(board.to_string());
        self
    }

    /// `-c CONFIG`: a homecloud.toml other than the example.
    pub fn config(mut self, path: &Path) -> Self {
        self.cmd.arg("-c").arg(path);
        self
    }

    /// `--extra-overlay NAME`: a test overlay from overlays/.
    pub fn overlay(mut self, name: &str) -> Self {
        self.cmd.args(["--extra-overlay", name]);
        self
    }

    /// Any other arguments of `hc-image build`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// An environment variable for the build (e.g. `HC_SECRETS_DIR`).
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Removes a variable the test's own environment may carry.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// Runs the build; the error carries its log.
    pub fn run(mut self) -> anyhow::Result<BuiltImage> {
        let o = self
            .cmd
            .arg("--out")
            .arg(&self.out)
            .output()
            .context("running hc-image")?;
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        if !o.status.success() {
            bail!("hc-image build failed ({}): {stderr}", o.status);
        }
        let board = self.board.as_deref().unwrap_or(DEFAULT_BOARD);
        Ok(BuiltImage {
            img: self.out.join(format!("homecloud-{board}.img")),
            manifest: self.out.join("manifest.json"),
            stderr,
        })
    }
}
