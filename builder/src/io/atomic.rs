// SPDX-License-Identifier: Apache-2.0
//! Durable writes: a file is written and synced under a `*.partial` name,
//! then renamed, and its directory synced, so a killed build or a power cut
//! leaves the old file or the new one (and perhaps a `*.partial`), never a
//! truncated file under the real name.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `<p>.partial`: where an output is written until it is complete.
pub fn partial(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// fsync of a directory, so renames and new names in it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Creates (or truncates) `path` with `data`, syncs the file and its
/// directory. No rename: for outputs that are renamed later, as a set.
pub fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    sync_dir(parent(path))
}

/// Replaces `path` with `data` all at once: written and synced under a
/// unique temporary name in the same directory (so concurrent writers of
/// one cache entry cannot mix their bytes), renamed, directory synced.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".hc-")
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    // The temporary file is removed if the rename fails.
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_partial() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f.json");
        write_atomic(&p, b"one").expect("first");
        write_atomic(&p, b"two").expect("second");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let left: Vec<_> = std::fs::read_dir(d.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(
            partial(Path::new("a/b.img")),
            PathBuf::from("a/b.img.partial")
        );
        let err = write_atomic(&d.path().join("no/such/dir/f"), b"x").expect_err("no dir");
        assert!(format!("{err:#}").contains("no/such/dir"), "{err:#}");
    }
}
