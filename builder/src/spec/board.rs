// SPDX-License-Identifier: Apache-2.0
//! Board files (`boards/<name>.toml`): the disk, the boot method and the
//! bootloader blobs of one board. Data picking among mechanisms Rust knows.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::load::{check_schema, is_hex64, read};
use crate::error::{parse_toml, InputError};
use crate::size::Size;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Arm64,
    Amd64,
}

impl Arch {
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Amd64 => "amd64",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Mbr,
    Gpt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootMethod {
    /// U-Boot distro boot reading `/boot/extlinux/extlinux.conf`.
    Extlinux,
    /// UEFI firmware loading `EFI/BOOT/BOOT*.EFI` from the ESP.
    Uefi,
}

/// Which partition carries the MBR "active" flag U-Boot's distro boot looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bootable {
    None,
    Boot,
    Root,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BoardSpec {
    /// Format version; must be 1.
    pub schema: u32,
    /// Board name, equal to the file name without `.toml`.
    pub name: String,
    pub description: String,
    pub arch: Arch,
    pub disk: DiskSpec,
    pub boot: BootSpec,
    /// Bootloader blobs written at fixed byte offsets.
    #[serde(default)]
    pub blobs: Vec<BlobSpec>,
    /// A pinned Armbian image for `--base`.
    pub armbian: Option<ArmbianPin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    pub table: TableKind,
    /// Byte offset of partition 1; room for the blobs before it.
    pub first_partition: Size,
    /// Partition alignment (default 1MiB).
    #[serde(default = "one_mib")]
    pub align: Size,
    /// Size of the FAT32 `HCBOOT` partition.
    pub boot_size: Size,
    /// On GPT, make the HCBOOT partition the EFI system partition.
    #[serde(default)]
    pub boot_is_esp: bool,
    #[serde(default = "bootable_root")]
    pub bootable: Bootable,
}

fn one_mib() -> Size {
    Size::mib(1)
}
fn bootable_root() -> Bootable {
    Bootable::Root
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootSpec {
    pub method: BootMethod,
    /// Device tree path under the kernel's dtb directory.
    pub dtb: Option<String>,
    /// Kernel console, e.g. `ttyS2,1500000n8`.
    pub console: String,
    #[serde(default)]
    pub kernel_args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlobSpec {
    pub name: String,
    /// Debian binary package holding the blob.
    pub package: String,
    /// Its source package (decides the pool directory).
    pub source: String,
    pub version: String,
    /// Debian architecture of the package.
    pub arch: String,
    /// Suite whose index is searched when the pinned version has gone.
    pub suite: String,
    /// sha256 of the .deb.
    pub deb_sha256: String,
    /// Path of the blob inside the package.
    pub path: String,
    /// sha256 of the blob itself.
    pub sha256: String,
    /// Length of the blob in bytes.
    pub size: u64,
    /// Byte offset on the disk.
    pub offset: Size,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArmbianPin {
    /// File name of the image as downloaded.
    pub file: String,
    pub url: String,
    pub sha256: String,
}

impl BoardSpec {
    pub fn load(path: &Path) -> Result<Self, InputError> {
        let file = path.display().to_string();
        let b: BoardSpec = parse_toml(&read(path)?, &file)?;
        b.validate(&file, path.file_stem().and_then(|s| s.to_str()))?;
        Ok(b)
    }

    /// Rules that need no arithmetic across fields; layout overlaps are `plan`'s.
    pub fn validate(&self, file: &str, stem: Option<&str>) -> Result<(), InputError> {
        check_schema(file, self.schema)?;
        if let Some(stem) = stem {
            if stem != self.name {
                return Err(InputError::new(
                    file,
                    "name",
                    format!("{:?} differs from the file name {stem:?}", self.name),
                    "make them equal",
                ));
            }
        }
        if self.disk.boot_is_esp && self.disk.table != TableKind::Gpt {
            return Err(InputError::new(
                file,
                "disk.boot_is_esp",
                "an EFI system partition needs a GPT",
                "set disk.table = \"gpt\"",
            ));
        }
        if self.boot.method == BootMethod::Uefi && !self.disk.boot_is_esp {
            return Err(InputError::new(
                file,
                "boot.method",
                "UEFI boot needs the HCBOOT partition to be the ESP",
                "set disk.boot_is_esp = true",
            ));
        }
        for (i, b) in self.blobs.iter().enumerate() {
            for (key, v) in [("deb_sha256", &b.deb_sha256), ("sha256", &b.sha256)] {
                if !is_hex64(v) {
                    return Err(InputError::new(
                        file,
                        format!("blobs[{i}].{key}"),
                        format!("{v:?} is not a lowercase sha256"),
                        "write 64 lowercase hex digits",
                    ));
                }
            }
            if b.path.starts_with('/') || b.path.contains("..") {
                return Err(InputError::new(
                    file,
                    format!("blobs[{i}].path"),
                    "must be relative to the package root without '..'",
                    "write it as in `dpkg-deb -c`, without the leading ./",
                ));
            }
        }
        if let Some(a) = &self.armbian {
            if !is_hex64(&a.sha256) {
                return Err(InputError::new(
                    file,
                    "armbian.sha256",
                    "not a lowercase sha256",
                    "write 64 lowercase hex digits",
                ));
            }
        }
        Ok(())
    }
}
