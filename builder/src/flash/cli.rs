// SPDX-License-Identifier: Apache-2.0
//! clap types of `hc-image flash` and `hc-image bench flash`, and the
//! dispatch `main` calls.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::error::InputError;

#[derive(Debug, Args)]
pub struct FlashArgs {
    /// Image: .img, .img.zst or .img.xz (the .bmap and SHA256SUMS beside it
    /// are used)
    #[arg(required_unless_present = "list")]
    pub image: Option<PathBuf>,
    /// Whole-disk device of the card, e.g. /dev/sdb or /dev/mmcblk0
    #[arg(required_unless_present = "list")]
    pub device: Option<PathBuf>,
    /// List removable disks (model, size, transport) and exit
    #[arg(long, conflicts_with_all = ["image", "device"])]
    pub list: bool,
    /// Write without asking (needed when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Allow a disk that does not report itself removable
    #[arg(long)]
    pub force: bool,
    /// Skip reading the card back after writing
    #[arg(long)]
    pub no_verify: bool,
    /// Block map (default: IMAGE's .bmap beside it)
    #[arg(long, value_name = "FILE")]
    pub bmap: Option<PathBuf>,
    /// Replace homecloud.toml on the card's HCBOOT with this file (checked
    /// first)
    #[arg(long, short = 'c', value_name = "homecloud.toml")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchFlashArgs {
    /// Image to write (.img with .img.zst and .bmap beside it; default: one
    /// built from a generated rootfs of --size-mib, cached in --out)
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// Size of the generated rootfs when no --image is given
    #[arg(long, default_value_t = 200)]
    pub size_mib: u64,
    /// Work directory (the loop device's backing file lives here)
    #[arg(long, default_value = "out/bench-flash")]
    pub out: PathBuf,
    /// Runs of each tool; the median is compared
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
}

/// `hc-image flash ...`
pub fn run(a: FlashArgs, quiet: bool) -> Result<()> {
    if a.list {
        return super::list();
    }
    let missing = |what: &str| {
        InputError::new(
            "command line",
            what,
            "is missing",
            "usage: hc-image flash IMAGE DEVICE (or --list)",
        )
    };
    let opts = super::FlashOpts {
        image: a.image.ok_or_else(|| missing("IMAGE"))?,
        device: a.device.ok_or_else(|| missing("DEVICE"))?,
        bmap: a.bmap,
        yes: a.yes,
        force: a.force,
        no_verify: a.no_verify,
        config: a.config,
        quiet,
    };
    let r = super::flash(&opts)?;
    if !quiet {
        eprintln!(
            "wrote {} in {} ranges to {} in {:.1}s{}",
            crate::size::human(r.written),
            r.ranges,
            opts.device.display(),
            r.write_secs,
            match r.verify_secs {
                Some(v) => format!(", verified in {v:.1}s"),
                None => ", not verified".into(),
            }
        );
    }
    Ok(())
}
