// SPDX-License-Identifier: Apache-2.0
//! Durable small files: state, keys, secrets and configuration are all
//! written through `write_atomic`, so a power cut leaves the old or the new
//! content, never a torn or a world-readable one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::exec::Result;

/// Mode of ordinary files (configuration, public state).
pub const PUBLIC: u32 = 0o644;
/// Mode of keys, tokens and anything derived from the cluster secret.
pub const SECRET: u32 = 0o600;

/// Writes `data` to `path` with `mode`: a temporary file created with that
/// mode (never wider, whatever the umask), synced, renamed over `path`, and
/// the directory synced so the rename itself survives a power cut.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    replace(path, data, Some(mode))
}

/// `write_atomic` on a filesystem whose modes come from its mount options
/// (HCBOOT's FAT: `umask=0077`), where setting a mode fails.
pub fn write_atomic_fat(path: &Path, data: &[u8]) -> Result<()> {
    replace(path, data, None)
}

fn replace(path: &Path, data: &[u8], mode: Option<u32>) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.hc-tmp.{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode.unwrap_or(0o600))
            .open(&tmp)?;
        // A leftover temp file keeps its old mode: set it again.
        if let Some(mode) = mode {
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("writing {}: {e}", tmp.display()));
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()))
}

/// `write_atomic` of `v` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, v: &T, mode: u32) -> Result<()> {
    let b = serde_json::to_vec_pretty(v).map_err(|e| format!("encoding: {e}"))?;
    write_atomic(path, &b, mode)
}

/// A JSON file, or the default when it is missing or unreadable.
pub fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> T {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// A file's trimmed text, if it can be read.
pub fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn set_mode(p: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_files_with_the_asked_mode_and_leave_no_temp() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("a/b/key");
        // A leftover temp file from a cut, wider than the mode asked for.
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let tmp = p.with_file_name(format!(".key.hc-tmp.{}", std::process::id()));
        std::fs::write(&tmp, b"old junk").expect("write");
        set_mode(&tmp, 0o666).expect("chmod");
        write_atomic(&p, b"secret", SECRET).expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"secret");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!tmp.exists(), "temp file left behind");
        write_atomic(&p, b"new", PUBLIC).expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"new");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn json_round_trips_and_a_bad_file_reads_as_default() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("m.json");
        write_json(&p, &vec![1u8, 2], PUBLIC).expect("write");
        assert_eq!(read_json::<Vec<u8>>(&p), vec![1, 2]);
        std::fs::write(&p, b"{").expect("write");
        assert!(read_json::<Vec<u8>>(&p).is_empty());
    }
}
