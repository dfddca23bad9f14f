// SPDX-License-Identifier: Apache-2.0
//! Board files (`boards/<name>.toml`) and image profiles (`images/<name>.toml`).
//!
//! Build-host only. Boards are data: Rust knows a closed set of mechanisms
//! (partition table kinds, boot methods, blob placement) and the files pick
//! among them.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{parse_toml, InputError};
use crate::size::Size;

pub const SCHEMA: u32 = 1;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageProfile {
    pub schema: u32,
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub disk: ImageDisk,
    /// Overlay directories under `overlays/`, applied in order.
    #[serde(default)]
    pub overlays: Vec<String>,
    /// Ownership and modes for overlay paths (default root:root, 0644/0755).
    #[serde(default)]
    pub files: Vec<FileAttr>,
    /// Fixed build timestamp (seconds); `SOURCE_DATE_EPOCH` overrides it.
    pub source_date_epoch: u64,
    /// The package-built base used when neither --rootfs nor --base is given.
    pub base: Option<BaseSpec>,
    /// Install the first-boot agent (built for the board's architecture).
    #[serde(default)]
    pub agent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BaseSpec {
    /// Debian suite, e.g. `trixie`.
    #[serde(default = "default_suite")]
    pub suite: String,
    /// Apt mirror; Armbian's repository can be added as a second source in `mirror`.
    #[serde(default = "default_mirror")]
    pub mirror: String,
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// mmdebstrap variant (`minbase`, `important`, ...).
    #[serde(default = "default_variant")]
    pub variant: String,
    /// Packages for every architecture.
    #[serde(default)]
    pub packages: Vec<String>,
    /// dpkg path-exclude globs (man pages, docs, locales).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Extra packages per Debian architecture (`arm64`, `amd64`).
    #[serde(default)]
    pub arch: std::collections::BTreeMap<String, ArchPackages>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchPackages {
    #[serde(default)]
    pub packages: Vec<String>,
}

fn default_suite() -> String {
    "trixie".into()
}
fn default_mirror() -> String {
    crate::blobs::DEFAULT_MIRROR.into()
}
fn default_components() -> Vec<String> {
    vec!["main".into()]
}
fn default_variant() -> String {
    "minbase".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageDisk {
    /// Root partition size, or unset for the content plus `root_free`.
    pub root_size: Option<Size>,
    /// Free space left in an automatically sized root filesystem.
    #[serde(default = "default_root_free")]
    pub root_free: Size,
    /// ext4 label of the root filesystem.
    #[serde(default = "default_root_label")]
    pub root_label: String,
}

impl Default for ImageDisk {
    fn default() -> Self {
        ImageDisk {
            root_size: None,
            root_free: default_root_free(),
            root_label: default_root_label(),
        }
    }
}

fn default_root_free() -> Size {
    Size::mib(256)
}
fn default_root_label() -> String {
    "hcroot".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileAttr {
    /// Absolute path in the root filesystem.
    pub path: String,
    /// Octal mode such as "0600".
    pub mode: Option<String>,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

impl FileAttr {
    pub fn mode_bits(&self) -> Option<u32> {
        self.mode
            .as_deref()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
    }
}

/// The repository directories data files are read from.
#[derive(Debug, Clone)]
pub struct DataDirs {
    pub root: PathBuf,
}

impl DataDirs {
    /// `HC_DATA_DIR`, else the source tree this binary was built from.
    pub fn locate() -> Self {
        let root = std::env::var_os("HC_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
        DataDirs { root }
    }
    pub fn boards(&self) -> PathBuf {
        self.root.join("boards")
    }
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn overlays(&self) -> PathBuf {
        self.root.join("overlays")
    }

    pub fn board_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.boards())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_string))?
            })
            .collect();
        names.sort();
        names
    }

    pub fn load_board(&self, name: &str) -> Result<(BoardSpec, PathBuf), InputError> {
        let path = self.boards().join(format!("{name}.toml"));
        if !path.is_file() || name.contains('/') {
            return Err(InputError::new(
                "--board",
                name,
                "unknown board",
                format!("use one of: {}", self.board_names().join(", ")),
            ));
        }
        let b = BoardSpec::load(&path)?;
        Ok((b, path))
    }

    pub fn load_profile(&self, name: &str) -> Result<(ImageProfile, PathBuf), InputError> {
        let path = self.images().join(format!("{name}.toml"));
        if !path.is_file() || name.contains('/') {
            let mut known: Vec<String> = std::fs::read_dir(self.images())
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.path().file_stem()?.to_str().map(str::to_string))
                .collect();
            known.sort();
            return Err(InputError::new(
                "--image",
                name,
                "unknown image profile",
                format!("use one of: {}", known.join(", ")),
            ));
        }
        let p = ImageProfile::load(&path, &self.overlays())?;
        Ok((p, path))
    }
}

fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|e| {
        InputError::new(
            path.display().to_string(),
            "(file)",
            format!("cannot read it: {e}"),
            "check the path",
        )
    })
}

fn check_schema(file: &str, schema: u32) -> Result<(), InputError> {
    if schema != SCHEMA {
        return Err(InputError::new(
            file,
            "schema",
            format!("unsupported schema {schema}"),
            "set `schema = 1`",
        ));
    }
    Ok(())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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

impl ImageProfile {
    pub fn load(path: &Path, overlays_dir: &Path) -> Result<Self, InputError> {
        let file = path.display().to_string();
        let p: ImageProfile = parse_toml(&read(path)?, &file)?;
        check_schema(&file, p.schema)?;
        for (i, o) in p.overlays.iter().enumerate() {
            if o.contains('/') || !overlays_dir.join(o).is_dir() {
                return Err(InputError::new(
                    &file,
                    format!("overlays[{i}]"),
                    format!("no overlay directory overlays/{o}"),
                    "create it or remove the entry",
                ));
            }
        }
        for (i, f) in p.files.iter().enumerate() {
            if !f.path.starts_with('/') {
                return Err(InputError::new(
                    &file,
                    format!("files[{i}].path"),
                    format!("{:?} is not absolute", f.path),
                    "start it with /",
                ));
            }
            if f.mode.is_some() && f.mode_bits().is_none_or(|m| m > 0o7777) {
                return Err(InputError::new(
                    &file,
                    format!("files[{i}].mode"),
                    format!("{:?} is not an octal mode", f.mode),
                    "write it like \"0600\"",
                ));
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> DataDirs {
        DataDirs {
            root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
        }
    }

    #[test]
    fn every_board_in_the_repo_loads() {
        let d = dirs();
        let names = d.board_names();
        assert_eq!(names, ["amd64", "pine64-lts", "qemu-arm64", "rock64"]);
        for n in names {
            d.load_board(&n).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn unknown_board_lists_known_ones() {
        let e = dirs().load_board("rpi5").expect_err("no such board");
        assert!(
            e.fix.contains("rock64") && e.fix.contains("pine64-lts"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_in_board_is_rejected() {
        let d = dirs();
        let text = std::fs::read_to_string(d.boards().join("rock64.toml")).expect("read");
        let text = text.replace("[boot]\n", "[boot]\nkernel = \"x\"\n");
        let e = parse_toml::<BoardSpec>(&text, "rock64.toml").expect_err("unknown key");
        assert_eq!(e.key, "boot.kernel", "{e}");
    }
}
