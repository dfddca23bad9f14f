// SPDX-License-Identifier: Apache-2.0
//! Stage 1, the request: the command line resolved into checked inputs
//! (board, profile, homecloud.toml, where the root comes from). Every input
//! error a build can find without doing work is found here.

use std::cell::{Cell, OnceCell};
use std::path::PathBuf;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use hc_firstboot::config::HomecloudConfig;
use hc_firstboot::secret::ClusterSecret;

use crate::error::InputError;
use crate::exec;
use crate::plan::StableIds;
use crate::size::Size;
use crate::spec::{BaseSpec, BoardSpec, DataDirs, ImageProfile};

/// Everything `build` needs, from the CLI or a test.
#[derive(Debug, Clone)]
pub struct BuildOpts {
    pub board: String,
    pub config: PathBuf,
    pub image: String,
    pub rootfs: Option<PathBuf>,
    pub base: Option<PathBuf>,
    pub base_sha256: Option<String>,
    pub out: PathBuf,
    pub root_size: Option<Size>,
    /// Overlays added after the profile's (e.g. `test-oracle` in QEMU tests).
    pub extra_overlays: Vec<String>,
    /// Rebuild the package base even when cached.
    pub refresh_base: bool,
    /// The cluster secret file; None: the per-cluster default, made if missing.
    pub cluster_secret: Option<PathBuf>,
}

/// Where the root filesystem comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The profile's `[base]`, built with mmdebstrap (cached).
    Packages(BaseSpec),
    /// A root tarball (`--rootfs`).
    Rootfs(PathBuf),
    /// An Armbian disk image (`--base`), pinned by `--base-sha256` or its
    /// published checksum.
    Armbian {
        image: PathBuf,
        sha256: Option<String>,
    },
}

/// A build's inputs, loaded and checked.
pub struct Request {
    pub dirs: DataDirs,
    pub board: BoardSpec,
    pub board_path: PathBuf,
    /// `boards/<name>.toml`, as errors name it.
    pub board_file: String,
    pub profile: ImageProfile,
    pub profile_path: PathBuf,
    /// `images/<name>.toml`, as errors name it.
    pub profile_file: String,
    /// The profile's overlays, then `--extra-overlay`'s, in order.
    pub overlays: Vec<String>,
    pub config: HomecloudConfig,
    pub config_path: PathBuf,
    pub config_bytes: Vec<u8>,
    pub source: Source,
    pub source_date_epoch: u64,
    pub out: PathBuf,
    pub root_size: Option<Size>,
    pub refresh_base: bool,
    cluster_secret: Option<PathBuf>,
    secret: OnceCell<ClusterSecret>,
    agent: AgentJob,
}

impl Request {
    pub fn resolve(opts: &BuildOpts) -> Result<Request> {
        let dirs = DataDirs::locate();
        let (board, board_path) = dirs.load_board(&opts.board)?;
        let (profile, profile_path) = dirs.load_profile(&opts.image)?;
        let config = HomecloudConfig::load(&opts.config)?;
        let config_bytes = std::fs::read(&opts.config)
            .with_context(|| format!("reading {}", opts.config.display()))?;
        let profile_file = format!("images/{}.toml", profile.name);
        let source = match (&opts.rootfs, &opts.base, &profile.base) {
            (Some(_), Some(_), _) => {
                return Err(InputError::new(
                    "command line",
                    "--rootfs/--base",
                    "both given",
                    "pass one: --rootfs for a tarball or --base for an Armbian image",
                )
                .into())
            }
            (Some(r), None, _) => Ok(Source::Rootfs(r.clone())),
            (None, Some(image), _) => Ok(Source::Armbian {
                image: image.clone(),
                sha256: opts.base_sha256.clone(),
            }),
            (None, None, Some(spec)) => Ok(Source::Packages(spec.clone())),
            (None, None, None) => Err(InputError::new(
                profile_file.clone(),
                "base",
                "no [base] package set and no --rootfs or --base given",
                "add a [base] table, or pass --rootfs ROOTFS.tar[.zst|.xz] or --base Armbian_*.img[.xz]",
            )),
        };
        // Missing host tools are reported before a missing base.
        exec::check_host_tools()?;
        let source = source?;
        // A cold package base is tens of minutes of emulated dpkg on about
        // one core: the agent compiles on the other meanwhile.
        let agent = AgentJob(Cell::new(
            (profile.agent && matches!(source, Source::Packages(_))).then(|| {
                let arch = board.arch;
                std::thread::spawn(move || crate::agent::binary(arch))
            }),
        ));
        let source_date_epoch = source_date_epoch(&profile)?;
        let mut overlays = profile.overlays.clone();
        for o in &opts.extra_overlays {
            if o.contains('/') || !dirs.overlays().join(o).is_dir() {
                return Err(InputError::new(
                    "command line",
                    "--extra-overlay",
                    format!("no overlay directory overlays/{o}"),
                    "name a directory under overlays/",
                )
                .into());
            }
            overlays.push(o.clone());
        }
        Ok(Request {
            board_file: format!("boards/{}.toml", board.name),
            dirs,
            board,
            board_path,
            profile,
            profile_path,
            profile_file,
            overlays,
            config,
            config_path: opts.config.clone(),
            config_bytes,
            source,
            source_date_epoch,
            out: opts.out.clone(),
            root_size: opts.root_size,
            refresh_base: opts.refresh_base,
            cluster_secret: opts.cluster_secret.clone(),
            secret: OnceCell::new(),
            agent,
        })
    }

    /// Creates the output directory and a work directory inside it (removed
    /// on drop), on the same filesystem as the outputs.
    pub fn work_dir(&self) -> Result<tempfile::TempDir> {
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("creating output directory {}", self.out.display()))?;
        tempfile::Builder::new()
            .prefix(".hc-work-")
            .tempdir_in(&self.out)
            .with_context(|| format!("creating a work directory in {}", self.out.display()))
    }

    /// Filesystem ids and GUIDs derived from board, profile and cluster
    /// names: the same inputs give the same image.
    pub fn stable_ids(&self) -> StableIds {
        crate::plan::stable_ids(
            format!(
                "{}\0{}\0{}",
                self.board.name, self.profile.name, self.config.cluster.name
            )
            .as_bytes(),
        )
    }

    /// The `hc-firstboot` binary to ship: the one compiled beside the base,
    /// else built (or taken from the cache) now.
    pub fn agent_binary(&self) -> Result<PathBuf> {
        match self.agent.0.take() {
            Some(job) => job
                .join()
                .map_err(|_| anyhow::anyhow!("the agent build thread panicked"))?,
            None => crate::agent::binary(self.board.arch),
        }
    }

    /// The cluster secret, made on first use (once per build).
    pub fn secret(&self) -> Result<&ClusterSecret> {
        if let Some(s) = self.secret.get() {
            return Ok(s);
        }
        let s = crate::secret::ensure(self.cluster_secret.as_deref(), &self.config.cluster.name)?;
        Ok(self.secret.get_or_init(|| s))
    }
}

/// `SOURCE_DATE_EPOCH` from the environment, else the profile's.
pub fn source_date_epoch(profile: &ImageProfile) -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v.trim().parse().map_err(|_| {
            InputError::new(
                "environment",
                "SOURCE_DATE_EPOCH",
                format!("{v:?} is not a number of seconds"),
                "unset it or give seconds since 1970",
            )
            .into()
        }),
        _ => Ok(profile.source_date_epoch),
    }
}

/// The agent built beside the base; joined on drop, so an early error does
/// not leave its compiler running behind the process.
struct AgentJob(Cell<Option<JoinHandle<Result<PathBuf>>>>);

impl Drop for AgentJob {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            let _ = job.join();
        }
    }
}
