// SPDX-License-Identifier: Apache-2.0
//! Overlay trees (`overlays/<name>/` of the profile, then `--extra-overlay`)
//! with explicit ownership: nothing takes its owner from the build host's
//! user.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::pipeline::contributor::{Contribution, Contributor, Ctx};
use crate::spec::FileAttr;
use crate::tarstream::{Extra, ExtraKind};

pub struct Overlays;

impl Contributor for Overlays {
    fn name(&self) -> &'static str {
        "overlays"
    }
    fn contribute(&self, cx: &Ctx, out: &mut Contribution) -> Result<()> {
        let r = cx.req;
        let extras = overlay_extras(&r.overlays, &r.profile.files, &r.dirs.overlays())?;
        out.root.extend(extras);
        Ok(())
    }
}

/// Walks `overlays/<name>` for each overlay, in order; later overlays win.
/// Owners are root:root and modes 0755/0644 unless the profile's `[[files]]`
/// declares otherwise.
pub fn overlay_extras(
    overlays: &[String],
    files: &[FileAttr],
    overlays_dir: &Path,
) -> Result<Vec<Extra>> {
    let mut out: BTreeMap<String, Extra> = BTreeMap::new();
    for name in overlays {
        let root = overlays_dir.join(name);
        walk(&root, &root, &mut out)?;
    }
    for f in files {
        let key = f
            .path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string();
        match out.get_mut(&key) {
            Some(e) => {
                if let Some(m) = f.mode_bits() {
                    e.mode = m;
                }
                e.uid = u64::from(f.uid);
                e.gid = u64::from(f.gid);
            }
            None => {
                // Declared but not shipped: an empty directory, as systemd tmpfiles would make.
                out.insert(
                    key.clone(),
                    Extra {
                        path: key,
                        kind: ExtraKind::Dir,
                        mode: f.mode_bits().unwrap_or(0o755),
                        uid: u64::from(f.uid),
                        gid: u64::from(f.gid),
                    },
                );
            }
        }
    }
    Ok(out.into_values().collect())
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Extra>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading overlay directory {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading overlay directory {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .context("overlay path outside its root")?
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let kind = if meta.is_dir() {
            ExtraKind::Dir
        } else if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&path)
                .with_context(|| format!("reading link {}", path.display()))?;
            ExtraKind::Symlink(t.to_string_lossy().into_owned())
        } else {
            ExtraKind::File(
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            )
        };
        // Only the executable bit survives git; everything else is declared.
        let mode = match &kind {
            ExtraKind::Dir => 0o755,
            ExtraKind::Symlink(_) => 0o777,
            ExtraKind::File(_) if meta.permissions().mode() & 0o111 != 0 => 0o755,
            ExtraKind::File(_) => 0o644,
        };
        let is_dir = matches!(kind, ExtraKind::Dir);
        out.insert(
            rel.clone(),
            Extra {
                path: rel,
                kind,
                mode,
                uid: 0,
                gid: 0,
            },
        );
        if is_dir {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::base::missing_parents;

    #[test]
    fn overlay_walk_is_sorted_root_owned_and_declared_modes_apply() {
        let d = tempfile::tempdir().expect("tempdir");
        let o = d.path().join("ov");
        std::fs::create_dir_all(o.join("etc/b")).expect("mkdir");
        std::fs::write(o.join("etc/b/f"), "x").expect("write");
        std::fs::write(o.join("etc/a"), "y").expect("write");
        let files = [
            FileAttr {
                path: "/etc/b/f".into(),
                mode: Some("0600".into()),
                uid: 5,
                gid: 6,
            },
            FileAttr {
                path: "/var/lib/new".into(),
                mode: Some("0700".into()),
                uid: 0,
                gid: 0,
            },
        ];
        let ex = overlay_extras(&["ov".into()], &files, d.path()).expect("walk");
        let paths: Vec<&str> = ex.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["etc", "etc/a", "etc/b", "etc/b/f", "var/lib/new"]);
        let f = ex.iter().find(|e| e.path == "etc/b/f").expect("f");
        assert_eq!((f.mode, f.uid, f.gid), (0o600, 5, 6));
        let parents = missing_parents(&ex, &|p| p == "var");
        assert_eq!(parents.len(), 1);
        assert_eq!(parents[0].path, "var/lib");
    }
}
