// SPDX-License-Identifier: Apache-2.0
//! What the builder adds to the base (build host): overlay trees with
//! explicit ownership, and baked files. Nothing takes its owner from the
//! build host's user.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::spec::ImageProfile;
use crate::tarstream::{Extra, ExtraKind};

/// Walks `overlays/<name>` for each overlay of the profile, in order; later
/// overlays win. Owners are root:root and modes 0755/0644 unless the profile's
/// `[[files]]` declares otherwise.
pub fn overlay_extras(profile: &ImageProfile, overlays_dir: &Path) -> Result<Vec<Extra>> {
    let mut out: BTreeMap<String, Extra> = BTreeMap::new();
    for name in &profile.overlays {
        let root = overlays_dir.join(name);
        walk(&root, &root, &mut out)?;
    }
    for f in &profile.files {
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

/// Adds a root-owned file (and nothing else) to the extras.
pub fn add_file(extras: &mut Vec<Extra>, path: &str, data: Vec<u8>, mode: u32) {
    extras.retain(|e| e.path != path);
    extras.push(Extra {
        path: path.to_string(),
        kind: ExtraKind::File(data),
        mode,
        uid: 0,
        gid: 0,
    });
}

/// Parent directories of the extras, so a tree added to an empty or partial
/// base is still well formed. `present` says which exist in the base.
pub fn missing_parents(extras: &[Extra], present: &dyn Fn(&str) -> bool) -> Vec<Extra> {
    let mut have: std::collections::BTreeSet<String> =
        extras.iter().map(|e| e.path.clone()).collect();
    let mut out = Vec::new();
    for e in extras {
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !have.contains(parent) && !present(parent) {
                have.insert(parent.to_string());
                out.push(Extra {
                    path: parent.to_string(),
                    kind: ExtraKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                });
            }
            p = parent;
        }
    }
    out
}

/// Where the HCBOOT partition is mounted on the device.
pub fn hcboot_mountpoint(board: &crate::spec::BoardSpec) -> &'static str {
    if board.disk.boot_is_esp {
        "/boot/efi"
    } else {
        "/boot/hcboot"
    }
}

/// Kernel arguments after `root=... ro`: the board's console and its own.
fn kernel_args(board: &crate::spec::BoardSpec) -> String {
    let mut args = vec![
        "rootwait".to_string(),
        format!("console={}", board.boot.console),
    ];
    args.extend(
        board
            .boot
            .kernel_args
            .iter()
            .filter(|a| *a != "rootwait")
            .cloned(),
    );
    args.join(" ")
}

/// Boot configuration for the newest kernel in the base: `extlinux.conf`
/// for U-Boot boards, `/etc/default/u-boot` so Debian's u-boot-update writes
/// the same on kernel upgrades, and `/etc/fstab`. Empty when the base has no
/// kernel (a tarball given with --rootfs may not).
pub fn boot_extras(
    board: &crate::spec::BoardSpec,
    kernels: &std::collections::BTreeSet<String>,
    initrds: &std::collections::BTreeSet<String>,
    root_uuid: &str,
    root_label: &str,
) -> Vec<Extra> {
    use crate::spec::BootMethod;
    let uuid = root_uuid.to_ascii_lowercase();
    let mut out = Vec::new();
    let mnt = hcboot_mountpoint(board);
    let fstab = format!(
        "# Written by hc-image.\nUUID={uuid} / ext4 defaults,errors=remount-ro 0 1\nLABEL=HCBOOT {mnt} vfat defaults,nofail,umask=0077,x-systemd.device-timeout=10min 0 2\n"
    );
    add_file(&mut out, "etc/fstab", fstab.into_bytes(), 0o644);
    out.push(Extra {
        path: mnt.trim_start_matches('/').to_string(),
        kind: ExtraKind::Dir,
        mode: 0o700,
        uid: 0,
        gid: 0,
    });
    let Some(ver) = kernels.iter().next_back() else {
        return out;
    };
    let args = kernel_args(board);
    if board.boot.method == BootMethod::Extlinux {
        let fdt = board
            .boot
            .dtb
            .as_ref()
            .map(|d| format!("\tfdt /usr/lib/linux-image-{ver}/{d}\n"))
            .unwrap_or_default();
        let initrd = if initrds.contains(ver) {
            format!("\tinitrd /boot/initrd.img-{ver}\n")
        } else {
            String::new()
        };
        let conf = format!(
            "# Written by hc-image for board {board}; Debian's u-boot-update\n\
             # rewrites it on kernel upgrades from /etc/default/u-boot.\n\
             default l0\nmenu title hc-image ({label})\nprompt 0\ntimeout 10\n\n\
             label l0\n\tmenu label Debian GNU/Linux, kernel {ver}\n\
             \tlinux /boot/vmlinuz-{ver}\n{initrd}{fdt}\tappend root=UUID={uuid} ro {args}\n",
            board = board.name,
            label = root_label,
        );
        add_file(
            &mut out,
            "boot/extlinux/extlinux.conf",
            conf.into_bytes(),
            0o644,
        );
        let fdt_line = board
            .boot
            .dtb
            .as_ref()
            .map(|d| format!("U_BOOT_FDT=\"{d}\"\nU_BOOT_FDT_DIR=\"/usr/lib/linux-image-\"\n"))
            .unwrap_or_default();
        let defaults = format!(
            "# Written by hc-image: keeps u-boot-update's extlinux.conf bootable.\n\
             U_BOOT_UPDATE=\"true\"\nU_BOOT_PROMPT=\"0\"\nU_BOOT_TIMEOUT=\"10\"\n\
             U_BOOT_ROOT=\"root=UUID={uuid}\"\nU_BOOT_PARAMETERS=\"ro {args}\"\n{fdt_line}"
        );
        add_file(&mut out, "etc/default/u-boot", defaults.into_bytes(), 0o644);
    }
    out
}

/// ESP contents for UEFI boards: systemd-boot as the removable-media loader
/// and one boot entry for the newest kernel, which is copied onto the ESP.
pub fn esp_entries(
    board: &crate::spec::BoardSpec,
    stats: &crate::tarstream::TreeStats,
    root_uuid: &str,
) -> Vec<crate::fs::FatEntry> {
    use crate::fs::FatEntry;
    let mut out = Vec::new();
    let loader = stats
        .boot_files
        .get("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    let Some(ver) = stats.kernels.iter().next_back() else {
        return out;
    };
    let (Some(loader), Some(kernel)) =
        (loader, stats.boot_files.get(&format!("boot/vmlinuz-{ver}")))
    else {
        return out;
    };
    out.push(FatEntry::File(
        "EFI/BOOT/BOOTX64.EFI".into(),
        loader.clone(),
    ));
    out.push(FatEntry::Dir("loader".into()));
    out.push(FatEntry::Dir("loader/entries".into()));
    out.push(FatEntry::File(
        "loader/loader.conf".into(),
        b"default hc.conf\ntimeout 0\n".to_vec(),
    ));
    out.push(FatEntry::File(format!("vmlinuz-{ver}"), kernel.clone()));
    let mut entry = format!("title Debian GNU/Linux (hc-image)\nlinux /vmlinuz-{ver}\n");
    if let Some(initrd) = stats.boot_files.get(&format!("boot/initrd.img-{ver}")) {
        out.push(FatEntry::File(format!("initrd.img-{ver}"), initrd.clone()));
        entry.push_str(&format!("initrd /initrd.img-{ver}\n"));
    }
    entry.push_str(&format!(
        "options root=UUID={} ro {}\n",
        root_uuid.to_ascii_lowercase(),
        kernel_args(board)
    ));
    out.push(FatEntry::File(
        "loader/entries/hc.conf".into(),
        entry.into_bytes(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{FileAttr, ImageDisk};

    #[test]
    fn overlay_walk_is_sorted_root_owned_and_declared_modes_apply() {
        let d = tempfile::tempdir().expect("tempdir");
        let o = d.path().join("ov");
        std::fs::create_dir_all(o.join("etc/b")).expect("mkdir");
        std::fs::write(o.join("etc/b/f"), "x").expect("write");
        std::fs::write(o.join("etc/a"), "y").expect("write");
        let p = ImageProfile {
            schema: 1,
            name: "t".into(),
            description: String::new(),
            disk: ImageDisk::default(),
            overlays: vec!["ov".into()],
            files: vec![
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
            ],
            source_date_epoch: 0,
            base: None,
            agent: false,
        };
        let ex = overlay_extras(&p, d.path()).expect("walk");
        let paths: Vec<&str> = ex.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["etc", "etc/a", "etc/b", "etc/b/f", "var/lib/new"]);
        let f = ex.iter().find(|e| e.path == "etc/b/f").expect("f");
        assert_eq!((f.mode, f.uid, f.gid), (0o600, 5, 6));
        let parents = missing_parents(&ex, &|p| p == "var");
        assert_eq!(parents.len(), 1);
        assert_eq!(parents[0].path, "var/lib");
    }
}
