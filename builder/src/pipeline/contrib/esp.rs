// SPDX-License-Identifier: Apache-2.0
//! The EFI system partition's contents, for boards whose HCBOOT is the ESP:
//! systemd-boot as the removable-media loader and one boot entry for the
//! newest kernel of the base, which is copied onto the ESP.

use anyhow::Result;

use super::boot::kernel_args;
use crate::fs::FatEntry;
use crate::pipeline::contributor::{Contribution, Contributor, Ctx};
use crate::spec::BoardSpec;
use crate::tarstream::TreeStats;

pub struct Esp;

impl Contributor for Esp {
    fn name(&self) -> &'static str {
        "esp"
    }
    fn applies(&self, cx: &Ctx) -> bool {
        cx.req.board.disk.boot_is_esp
    }
    fn contribute(&self, cx: &Ctx, out: &mut Contribution) -> Result<()> {
        out.hcboot_dir("EFI");
        out.hcboot_dir("EFI/BOOT");
        if let Some(stats) = cx.base.tree() {
            out.hcboot
                .extend(esp_entries(&cx.req.board, stats, &cx.ids.root_uuid));
        }
        Ok(())
    }
}

/// ESP contents for UEFI boards: systemd-boot as the removable-media loader
/// and one boot entry for the newest kernel, which is copied onto the ESP.
pub fn esp_entries(board: &BoardSpec, stats: &TreeStats, root_uuid: &str) -> Vec<FatEntry> {
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
