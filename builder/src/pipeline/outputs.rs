// SPDX-License-Identifier: Apache-2.0
//! The build's output files: written as `*.partial`, removed on failure,
//! renamed to their names only at the end, when everything was verified.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::artifacts::ImageDigest;
use crate::io::{partial, write_synced};

/// One output: its final name and where it is written until then.
pub struct Output {
    pub path: PathBuf,
    pub partial: PathBuf,
}

impl Output {
    fn new(path: PathBuf) -> Self {
        Output {
            partial: partial(&path),
            path,
        }
    }
    pub fn file_name(&self) -> String {
        super::base::file_name(&self.path)
    }
}

/// The outputs of one build; the partials are removed on drop unless
/// [`Outputs::publish`] renamed them.
pub struct Outputs {
    pub dir: PathBuf,
    pub img: Output,
    pub zst: Output,
    pub bmap: Output,
    pub manifest: Output,
    pub sums: Output,
    published: bool,
}

impl Outputs {
    /// `<dir>/<name>.img`, `.img.zst`, `.img.bmap`, `manifest.json`, `SHA256SUMS`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let at = |f: String| Output::new(dir.join(f));
        Outputs {
            dir: dir.to_path_buf(),
            img: at(format!("{name}.img")),
            zst: at(format!("{name}.img.zst")),
            bmap: at(format!("{name}.img.bmap")),
            manifest: at("manifest.json".into()),
            sums: at("SHA256SUMS".into()),
            published: false,
        }
    }

    fn all(&self) -> [&Output; 5] {
        [&self.img, &self.zst, &self.bmap, &self.sums, &self.manifest]
    }

    /// Creates the (sparse) image file of `size` bytes.
    pub fn create_image(&self, size: u64) -> Result<File> {
        let p = &self.img.partial;
        let img = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(p)
            .with_context(|| format!("creating {}", p.display()))?;
        img.set_len(size)
            .with_context(|| format!("sizing {} to {size}", p.display()))?;
        Ok(img)
    }

    /// Writes `manifest.json` and `SHA256SUMS` (partials, synced).
    pub fn write_records(&self, manifest: &serde_json::Value, digest: &ImageDigest) -> Result<()> {
        write_synced(
            &self.manifest.partial,
            &serde_json::to_vec_pretty(manifest)?,
        )?;
        let sums = format!(
            "{}  {}\n{}  {}\n{}  {}\n",
            digest.sha256,
            self.img.file_name(),
            digest.zst_sha256,
            self.zst.file_name(),
            digest.bmap_sha256,
            self.bmap.file_name()
        );
        write_synced(&self.sums.partial, sums.as_bytes())
    }

    /// Renames every partial to its name (the manifest last).
    pub fn publish(mut self) -> Result<Outputs> {
        for o in self.all() {
            std::fs::rename(&o.partial, &o.path).with_context(|| {
                format!("renaming {} to {}", o.partial.display(), o.path.display())
            })?;
        }
        self.published = true;
        // Best effort, as the outputs themselves are synced.
        let _ = crate::io::sync_dir(&self.dir);
        Ok(self)
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        if !self.published {
            for o in self.all() {
                let _ = std::fs::remove_file(&o.partial);
            }
        }
    }
}
