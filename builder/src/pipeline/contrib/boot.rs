// SPDX-License-Identifier: Apache-2.0
//! Boot entries in the root, for a base with a kernel: `/etc/fstab`, the
//! HCBOOT mount point, and for U-Boot boards `extlinux.conf` with
//! `/etc/default/u-boot` (so Debian's u-boot-update writes the same on
//! kernel upgrades). Not for an Armbian root, which boots as Armbian made it.

use anyhow::Result;

use crate::pipeline::contributor::{Contribution, Contributor, Ctx};
use crate::spec::BoardSpec;
use crate::tarstream::{Extra, ExtraKind};

pub struct BootEntries;

impl Contributor for BootEntries {
    fn name(&self) -> &'static str {
        "boot-entries"
    }
    fn applies(&self, cx: &Ctx) -> bool {
        cx.base.tree().is_some()
    }
    fn contribute(&self, cx: &Ctx, out: &mut Contribution) -> Result<()> {
        let Some(stats) = cx.base.tree() else {
            return Ok(());
        };
        let r = cx.req;
        boot_extras(
            &r.board,
            &stats.kernels,
            &stats.initrds,
            &cx.ids.root_uuid,
            &r.profile.disk.root_label,
            out,
        );
        Ok(())
    }
}

/// Where the HCBOOT partition is mounted on the device.
pub fn hcboot_mountpoint(board: &BoardSpec) -> &'static str {
    if board.disk.boot_is_esp {
        "/boot/efi"
    } else {
        "/boot/hcboot"
    }
}

/// Kernel arguments after `root=... ro`: the board's console and its own.
pub fn kernel_args(board: &BoardSpec) -> String {
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

/// Boot configuration for the newest kernel in the base: `/etc/fstab` and
/// the HCBOOT mount point always, `extlinux.conf` for U-Boot boards and
/// `/etc/default/u-boot` so Debian's u-boot-update writes the same on kernel
/// upgrades when the base has a kernel (a tarball given with --rootfs may
/// not).
fn boot_extras(
    board: &BoardSpec,
    kernels: &std::collections::BTreeSet<String>,
    initrds: &std::collections::BTreeSet<String>,
    root_uuid: &str,
    root_label: &str,
    out: &mut Contribution,
) {
    use crate::spec::BootMethod;
    let uuid = root_uuid.to_ascii_lowercase();
    let mnt = hcboot_mountpoint(board);
    let fstab = format!(
        "# Written by hc-image.\nUUID={uuid} / ext4 defaults,errors=remount-ro 0 1\nLABEL=HCBOOT {mnt} vfat defaults,nofail,umask=0077,x-systemd.device-timeout=10min 0 2\n"
    );
    out.file("etc/fstab", fstab.into_bytes(), 0o644);
    out.replace(Extra {
        path: mnt.trim_start_matches('/').to_string(),
        kind: ExtraKind::Dir,
        mode: 0o700,
        uid: 0,
        gid: 0,
    });
    let Some(ver) = kernels.iter().next_back() else {
        return;
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
        out.file("boot/extlinux/extlinux.conf", conf.into_bytes(), 0o644);
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
        out.file("etc/default/u-boot", defaults.into_bytes(), 0o644);
    }
}
