// SPDX-License-Identifier: Apache-2.0
//! `--config`: after the card is written and verified, replace
//! `homecloud.toml` on its HCBOOT FAT partition (partition 1, found from
//! the partition table just written) with mtools, read it back with
//! `mtype`, and check the filesystem with `fsck.vfat -n` through a
//! read-only loop device over that partition.

use std::fs::File;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::exec::{self, tools};

/// Partition 1 of the device as (offset, size) in bytes.
pub fn hcboot_region(dev: &Path) -> Result<(u64, u64)> {
    let mut f = File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let (_, parts) = crate::disk::read_table(&mut f).with_context(|| {
        format!(
            "reading the partition table just written to {}",
            dev.display()
        )
    })?;
    let p = parts
        .iter()
        .find(|p| p.number == 1)
        .with_context(|| format!("{} has no partition 1 (HCBOOT)", dev.display()))?;
    Ok((p.start, p.size))
}

fn mtools(tool: &str, dev: &Path, offset: u64) -> Command {
    let mut c = Command::new(tool);
    c.env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", dev.display()));
    c
}

/// Replaces `homecloud.toml` on the card's HCBOOT and proves it.
pub fn replace_config(dev: &Path, config: &Path) -> Result<()> {
    let want = std::fs::read(config).with_context(|| format!("reading {}", config.display()))?;
    let (offset, size) = hcboot_region(dev)?;
    exec::run(
        mtools(tools::MCOPY, dev, offset)
            .arg("-o")
            .arg(config)
            .arg("::/homecloud.toml"),
    )
    .context("copying homecloud.toml onto HCBOOT (apt-get install mtools)")?;
    let back = exec::run(mtools("mtype", dev, offset).arg("::/homecloud.toml"))
        .context("reading homecloud.toml back from HCBOOT")?;
    if back.stdout != want {
        bail!(
            "homecloud.toml read back from HCBOOT differs from {} ({} bytes read, {} written)",
            config.display(),
            back.stdout.len(),
            want.len()
        );
    }
    fsck_region(dev, offset, size)
}

/// `fsck.vfat -n` over a read-only loop device on `offset..offset+size`.
pub fn fsck_region(dev: &Path, offset: u64, size: u64) -> Result<()> {
    let out = exec::run(
        Command::new("losetup")
            .args(["--find", "--show", "--read-only", "--offset"])
            .arg(offset.to_string())
            .arg("--sizelimit")
            .arg(size.to_string())
            .arg(dev),
    )
    .context("attaching a loop device to check HCBOOT (apt-get install util-linux)")?;
    let lo = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let checked = exec::run(Command::new(tools::FSCK_VFAT).arg("-n").arg(&lo));
    let detached = exec::run(Command::new("losetup").arg("-d").arg(&lo));
    checked.context("checking HCBOOT with fsck.vfat -n after replacing homecloud.toml")?;
    detached.with_context(|| format!("detaching {lo}"))?;
    Ok(())
}
