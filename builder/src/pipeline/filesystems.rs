// SPDX-License-Identifier: Apache-2.0
//! Stages 4 to 6: the filesystems written into the image, read back, then
//! the partition table and blobs, written last and read back too, so a
//! killed build never leaves a bootable but wrong image.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::base::{Base, RootWrite};
use super::report::Reporter;
use super::request::Request;
use super::stage::Staged;
use crate::fs as hfs;
use crate::io::sha256_file;
use crate::plan::{Layout, PartRole};

/// The image with both filesystems written, not yet checked.
pub struct Filesystems {
    img: File,
    fat_file: PathBuf,
    /// xattrs set after mke2fs (for the manifest).
    pub xattrs: usize,
}

/// Filesystems read back and found as written.
pub struct Verified(File);

/// The verified image with its partition table and blobs: complete.
pub struct Disk;

impl Filesystems {
    /// Writes HCBOOT (made in `work`, then copied) and the root into `img`.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        req: &Request,
        base: &Base,
        staged: &Staged,
        layout: &Layout,
        img: File,
        img_path: &Path,
        work: &Path,
        rep: &Reporter,
    ) -> Result<Filesystems> {
        let boot = layout.part(PartRole::Boot);
        let fat_file = work.join("hcboot.vfat");
        hfs::make_fat(
            &fat_file,
            boot.region.len(),
            &boot.label,
            layout.ids.boot_volume_id,
            &staged.hcboot,
            req.source_date_epoch,
            work,
        )?;
        hfs::copy_into(&fat_file, &img, boot.region.start)?;
        tracing::debug!("HCBOOT written at {:.1}s", rep.elapsed());
        let root = layout.part(PartRole::Root);
        let xattrs = base.write_root(
            &RootWrite {
                img: &img,
                img_path,
                region: root.region,
                label: &req.profile.disk.root_label,
                ids: &layout.ids,
                source_date_epoch: req.source_date_epoch,
                work,
            },
            &staged.root,
        )?;
        tracing::debug!("root written at {:.1}s", rep.elapsed());
        Ok(Filesystems {
            img,
            fat_file,
            xattrs,
        })
    }

    /// e2fsck over the root; HCBOOT read back against what was written.
    pub fn verify(self, img_path: &Path, layout: &Layout) -> Result<Verified> {
        hfs::check_ext4(img_path, layout.part(PartRole::Root).region.start)?;
        let boot = layout.part(PartRole::Boot);
        let fat_sha = sha256_file(&self.fat_file)?;
        let fat_back = hfs::hash_region(&self.img, boot.region.start, boot.region.len())?;
        if fat_sha != fat_back {
            anyhow::bail!("HCBOOT read back with sha256 {fat_back}, wrote {fat_sha}");
        }
        Ok(Verified(self.img))
    }
}

impl Verified {
    /// Blobs, then the partition table, synced and read back.
    pub fn finish(self, layout: &Layout, blob_data: &[Vec<u8>], req: &Request) -> Result<Disk> {
        let mut img = self.0;
        crate::disk::write_blobs(&mut img, layout, blob_data)?;
        crate::disk::write_table(&mut img, layout)?;
        img.sync_all().context("syncing the image")?;
        let shas: Vec<String> = req.board.blobs.iter().map(|b| b.sha256.clone()).collect();
        crate::disk::verify_table_and_blobs(&mut img, layout, &shas)
            .context("reading the partition table and blobs back")?;
        Ok(Disk)
    }
}
