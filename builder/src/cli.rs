// SPDX-License-Identifier: Apache-2.0
//! Command-line types (clap derive). `main` only dispatches.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::size::Size;

#[derive(Debug, Parser)]
#[command(
    name = "hc-image",
    version,
    about = "Build, inspect and check homecloud disk images",
    help_expected = true,
    max_term_width = 80
)]
pub struct Cli {
    /// More output (-v: debug, -vv: trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Build a disk image (default: board qemu-arm64, examples/homecloud.toml)
    Build(BuildArgs),
    /// Show an image's partitions, filesystems, blobs and lint findings
    Inspect(InspectArgs),
    /// Write an image to a card: sparse, verified, refuses system disks
    Flash(crate::flash::cli::FlashArgs),
    /// List boards, or re-pin a board's blobs to the mirror's current packages
    Boards(BoardsArgs),
    /// Service images: list recipes, pin their packages, build them
    Images(ImagesArgs),
    /// Check homecloud.toml files or print their JSON Schema
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Time a build against a shell baseline; `bench image`: base, build, boot
    Bench(BenchArgs),
    /// Boot an image under QEMU with the serial console on this terminal
    #[command(subcommand)]
    Qemu(QemuCmd),
    /// Developer tools
    #[command(subcommand, hide = true)]
    Dev(DevCmd),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Board name (see `hc-image boards`)
    #[arg(long, default_value = "qemu-arm64")]
    pub board: String,
    /// Cluster configuration baked onto the HCBOOT partition
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Image profile under images/
    #[arg(long, default_value = "homecloud")]
    pub image: String,
    /// Root filesystem as a tarball (.tar, .tar.zst or .tar.xz)
    #[arg(long, value_name = "ROOTFS.tar")]
    pub rootfs: Option<PathBuf>,
    /// Armbian disk image (.img or .img.xz) whose ext4 root is reused
    #[arg(long, value_name = "ARMBIAN.img")]
    pub base: Option<PathBuf>,
    /// sha256 the --base file must have (else its .sha file beside it)
    #[arg(long, value_name = "HEX")]
    pub base_sha256: Option<String>,
    /// Root filesystem size (default: content plus the profile's root_free)
    #[arg(long, value_name = "SIZE")]
    pub root_size: Option<Size>,
    /// Output directory
    #[arg(long, short = 'o', default_value = "out")]
    pub out: PathBuf,
    /// Add an overlay from overlays/ after the profile's (repeatable)
    #[arg(long, value_name = "NAME")]
    pub extra_overlay: Vec<String>,
    /// Rebuild the package base even if a cached one matches
    #[arg(long)]
    pub refresh_base: bool,
    /// Cluster secret file (default: ~/.config/hc-image/secrets/CLUSTER.key,
    /// made on first use; build every image of one cluster with the same file)
    #[arg(long, value_name = "FILE")]
    pub cluster_secret: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Disk image (.img)
    pub image: PathBuf,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BoardsArgs {
    #[command(subcommand)]
    pub cmd: Option<BoardsCmd>,
}

#[derive(Debug, Subcommand)]
pub enum BoardsCmd {
    /// List the boards (the default)
    List,
    /// Update a board's blob pins to the versions now on the mirror
    Pin {
        /// Board name
        board: String,
        /// Print the changes without writing the board file
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    pub cmd: Option<ImagesCmd>,
}

#[derive(Debug, Subcommand)]
pub enum ImagesCmd {
    /// List the recipes under images/containers and their pins (the default)
    List,
    /// Pin a recipe's packages and their dependencies to the mirror's
    /// current versions, for arm64 and amd64
    Pin {
        /// Recipe names (default: all)
        names: Vec<String>,
        /// Print the changes without writing the recipe files
        #[arg(long)]
        dry_run: bool,
    },
    /// Build images from their pins into an OCI layout (no emulation)
    Build {
        /// Recipe names (default: all)
        names: Vec<String>,
        /// Debian architecture (repeatable; default: arm64 and amd64)
        #[arg(long)]
        arch: Vec<String>,
        /// Output directory: oci-ARCH/, sbom/, images-ARCH.json
        #[arg(long, short = 'o', default_value = "out/images")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a homecloud.toml; exit 2 with the key and the fix if invalid
    Check {
        /// File to check
        file: PathBuf,
    },
    /// Print the JSON Schema of homecloud.toml
    Schema,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    /// Rootfs tarball (default: a generated ~1 GiB tree, cached in --out)
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Size of the generated tree in MiB
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// Work directory
    #[arg(long, default_value = "out/bench")]
    pub out: PathBuf,
    /// Runs of each pipeline; the median is compared
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
}

#[derive(Debug, Subcommand)]
pub enum BenchMode {
    /// Time the cold base, a warm build and a QEMU boot to the agent's stamp
    Image(BenchImageArgs),
    /// Time `flash` against dd and bmaptool on one loop device
    Flash(crate::flash::cli::BenchFlashArgs),
    /// Time building the service images cold and warm; their bytes
    Images(BenchImagesArgs),
}

#[derive(Debug, Args)]
pub struct BenchImagesArgs {
    /// Debian architecture
    #[arg(long, default_value = "arm64")]
    pub arch: String,
    /// Runs of each case; the median is printed
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
}

#[derive(Debug, Args)]
pub struct BenchImageArgs {
    /// Board to build (and boot, for qemu-arm64 and amd64)
    #[arg(long, default_value = "qemu-arm64")]
    pub board: String,
    /// Image profile under images/
    #[arg(long, default_value = "homecloud")]
    pub image: String,
    /// Cluster configuration (default: examples/homecloud.toml)
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Build the base now, into a fresh temporary cache (arm64: ~20-30 min)
    #[arg(long)]
    pub cold: bool,
}

#[derive(Debug, Subcommand)]
pub enum QemuCmd {
    /// Boot a copy of IMAGE (grown to --disk-size); the image is not changed
    Run {
        /// Disk image (.img) of board qemu-arm64 or amd64
        image: PathBuf,
        /// Board (default: from manifest.json beside the image)
        #[arg(long)]
        board: Option<String>,
        /// Size of the disk the guest sees
        #[arg(long, default_value = "8GiB")]
        disk_size: Size,
        /// Guest memory in MiB
        #[arg(long, default_value_t = 2048)]
        memory: u32,
        /// MAC of the guest NIC (homecloud.toml names nodes by MAC)
        #[arg(long, default_value = "52:54:00:12:34:01")]
        mac: String,
        /// Add an empty second disk of this size (the guest's /dev/vdb, e.g.
        /// for `storage.osd_device`); gone when QEMU exits
        #[arg(long)]
        data_disk: Option<Size>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevCmd {
    /// Build (or find cached) hc-firstboot for an architecture; print its path
    Agent {
        /// Debian architecture: arm64 or amd64
        arch: String,
    },
    /// Print the JSON Schema of board and image files
    Schema,
    /// Print the layout plan of a board as JSON
    Plan {
        /// Board name
        board: String,
        /// Root filesystem size
        #[arg(long, default_value = "1GiB")]
        root_size: Size,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn walk(cmd: &mut clap::Command, path: String, out: &mut Vec<(String, String)>) {
        out.push((path.clone(), cmd.render_long_help().to_string()));
        for sub in cmd.get_subcommands_mut() {
            let p = format!("{path} {}", sub.get_name());
            walk(sub, p, out);
        }
    }

    #[test]
    fn every_help_fits_80_columns() {
        let mut all = Vec::new();
        walk(
            &mut Cli::command().term_width(80),
            "hc-image".into(),
            &mut all,
        );
        assert!(all.len() > 8);
        for (path, help) in all {
            for line in help.lines() {
                assert!(line.chars().count() <= 80, "{path}: {line:?}");
            }
        }
    }
}
