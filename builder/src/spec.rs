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
    /// Extra apt repositories (`[[base.sources]]`, e.g. Armbian's), each
    /// signed by its own keyring; used for the build and kept on the device.
    #[serde(default)]
    pub sources: Vec<AptSource>,
    /// The profile file this table was loaded from: keyring paths are
    /// relative to its directory and errors name it.
    #[serde(skip)]
    #[schemars(skip)]
    pub origin: Option<PathBuf>,
}

/// One extra apt repository of the package-built base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AptSource {
    /// Repository URI: `http://`, `https://` or `file://`.
    pub uri: String,
    /// Suite, e.g. `trixie`; a flat repository is a path ending in `/` (`./`).
    pub suite: String,
    /// Components, e.g. `["main", "trixie-utils"]`; none for a flat repository.
    #[serde(default)]
    pub components: Vec<String>,
    /// OpenPGP keyring the repository is signed with (binary `.gpg` or
    /// armored `.asc`), relative to the profile's directory. Required:
    /// unsigned repositories are refused.
    pub keyring: Option<String>,
    /// sha256 the keyring file must have.
    pub keyring_sha256: Option<String>,
    /// Debian architectures to use this repository for (default: all).
    #[serde(default)]
    pub architectures: Vec<String>,
}

/// A source whose keyring was read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSource {
    pub source: AptSource,
    /// File name under `/etc/apt/keyrings/` in the image.
    pub keyring_name: String,
    pub keyring: Vec<u8>,
    pub keyring_sha256: String,
}

/// Where keyrings go in the image.
pub const KEYRINGS_DIR: &str = "/etc/apt/keyrings";

impl AptSource {
    /// The one-line `sources.list` entry, its keyring at `keyring_path`.
    pub fn one_line(&self, keyring_path: &str) -> String {
        let mut opts = Vec::new();
        if !self.architectures.is_empty() {
            opts.push(format!("arch={}", self.architectures.join(",")));
        }
        opts.push(format!("signed-by=\"{keyring_path}\""));
        let mut line = format!("deb [{}] {} {}", opts.join(" "), self.uri, self.suite);
        for c in &self.components {
            line.push(' ');
            line.push_str(c);
        }
        line
    }

    /// Rules on the table alone (no file access): `key` is `base.sources[i]`.
    fn validate(&self, file: &str, key: &str) -> Result<(), InputError> {
        let err = |field: &str, problem: String, fix: &str| {
            Err(InputError::new(
                file,
                format!("{key}.{field}"),
                problem,
                fix,
            ))
        };
        let word = |s: &str| {
            !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || "[]\"#".contains(c))
        };
        if !["http://", "https://", "file://"]
            .iter()
            .any(|p| self.uri.starts_with(p))
            || !word(&self.uri)
        {
            return err(
                "uri",
                format!("{:?} is not an http://, https:// or file:// URI", self.uri),
                "write the repository URI as in a sources.list line, e.g. \"http://apt.armbian.com\"",
            );
        }
        if !word(&self.suite) {
            return err(
                "suite",
                format!("{:?} is not a suite name", self.suite),
                "write one suite such as \"trixie\" (or \"./\" for a flat repository)",
            );
        }
        let flat = self.suite.ends_with('/');
        if flat && !self.components.is_empty() {
            return err(
                "components",
                format!(
                    "suite {:?} is a flat repository, which has no components",
                    self.suite
                ),
                "remove components, or name a suite without the trailing /",
            );
        }
        if !flat && self.components.is_empty() {
            return err(
                "components",
                "no components".to_string(),
                "list them, e.g. components = [\"main\"]",
            );
        }
        if let Some(c) = self.components.iter().find(|c| !word(c)) {
            return err(
                "components",
                format!("{c:?} is not a component name"),
                "one name per list entry, e.g. [\"main\", \"trixie-utils\"]",
            );
        }
        if let Some(a) = self.architectures.iter().find(|a| {
            a.is_empty()
                || !a
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }) {
            return err(
                "architectures",
                format!("{a:?} is not a Debian architecture"),
                "use Debian names such as \"arm64\" or \"amd64\", or remove the key",
            );
        }
        let Some(keyring) = &self.keyring else {
            return err(
                "keyring",
                "no keyring: unsigned repositories are refused".to_string(),
                "put the repository's OpenPGP key next to the profile and name it here, e.g. keyring = \"armbian.gpg\"",
            );
        };
        let name = Path::new(keyring)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if keyring.starts_with('/') || keyring.split('/').any(|c| c == "..") || name.is_empty() {
            return err(
                "keyring",
                format!("{keyring:?} is not a path below the profile's directory"),
                "put the keyring next to the profile (or below it) and give its relative path",
            );
        }
        if !(name.ends_with(".gpg") || name.ends_with(".asc"))
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        {
            return err(
                "keyring",
                format!("{name:?} must be named like NAME.gpg (binary) or NAME.asc (armored), letters, digits, . _ - +"),
                "rename the file: apt picks the format by the extension",
            );
        }
        if let Some(pin) = &self.keyring_sha256 {
            if !is_hex64(pin) {
                return err(
                    "keyring_sha256",
                    format!("{pin:?} is not a lowercase sha256"),
                    "write 64 lowercase hex digits (sha256sum of the keyring file)",
                );
            }
        }
        Ok(())
    }
}

impl BaseSpec {
    /// The profile file for error messages.
    pub fn file(&self) -> String {
        self.origin.as_ref().map_or_else(
            || "(image profile)".to_string(),
            |p| p.display().to_string(),
        )
    }

    /// Checks the `[[base.sources]]` tables (no file access).
    pub fn validate(&self) -> Result<(), InputError> {
        for (i, s) in self.sources.iter().enumerate() {
            s.validate(&self.file(), &format!("base.sources[{i}]"))?;
        }
        Ok(())
    }

    /// Reads every source's keyring (relative to the profile's directory)
    /// and checks its format and pin.
    pub fn resolve_sources(&self) -> Result<Vec<ResolvedSource>, InputError> {
        self.validate()?;
        let file = self.file();
        let dir = self
            .origin
            .as_ref()
            .and_then(|p| p.parent())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let mut out: Vec<ResolvedSource> = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            let key = format!("base.sources[{i}]");
            let rel = s.keyring.as_deref().unwrap_or_default();
            let path = dir.join(rel);
            let data = std::fs::read(&path).map_err(|e| {
                InputError::new(
                    &file,
                    format!("{key}.keyring"),
                    format!("cannot read the keyring {}: {e}", path.display()),
                    format!(
                        "put the OpenPGP key of {} at {} (armored keys: `gpg --dearmor` into a .gpg file, or name it .asc)",
                        s.uri,
                        path.display()
                    ),
                )
            })?;
            check_keyring(&data, rel).map_err(|(problem, fix)| {
                InputError::new(
                    &file,
                    format!("{key}.keyring"),
                    format!("{}: {problem}", path.display()),
                    fix,
                )
            })?;
            let sha = crate::blobs::sha256_hex(&data);
            if let Some(pin) = &s.keyring_sha256 {
                if *pin != sha {
                    return Err(InputError::new(
                        &file,
                        format!("{key}.keyring_sha256"),
                        format!("{} has sha256 {sha}, the profile pins {pin}", path.display()),
                        format!("make sure this is the repository's key; if it rotated its key, set keyring_sha256 = \"{sha}\""),
                    ));
                }
            }
            let name = Path::new(rel)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if let Some(other) = out
                .iter()
                .find(|o| o.keyring_name == name && o.keyring != data)
            {
                return Err(InputError::new(
                    &file,
                    format!("{key}.keyring"),
                    format!(
                        "another keyring named {name} with different content is used by {}",
                        other.source.uri
                    ),
                    format!(
                        "give the keyrings different file names: both become {KEYRINGS_DIR}/{name}"
                    ),
                ));
            }
            out.push(ResolvedSource {
                source: s.clone(),
                keyring_name: name,
                keyring: data,
                keyring_sha256: sha,
            });
        }
        Ok(out)
    }
}

/// The keyring must be what apt reads for its extension: binary OpenPGP
/// packets for `.gpg`, an armored public key block for `.asc`.
fn check_keyring(data: &[u8], name: &str) -> Result<(), (String, String)> {
    let armored = data
        .windows(36)
        .any(|w| w == b"-----BEGIN PGP PUBLIC KEY BLOCK-----");
    if data.is_empty() {
        return Err((
            "the file is empty".into(),
            "replace it with the repository's key".into(),
        ));
    }
    if data.len() >= 12 && &data[8..12] == b"KBXf" {
        return Err((
            "a GnuPG keybox (pubring.kbx), not a keyring apt can read".into(),
            "export the key: gpg --export KEYID > NAME.gpg".into(),
        ));
    }
    if name.ends_with(".asc") {
        if !armored {
            return Err((
                "not an armored OpenPGP public key (no BEGIN PGP PUBLIC KEY BLOCK line)".into(),
                "use the armored key, or a binary keyring named .gpg".into(),
            ));
        }
    } else if armored || data.starts_with(b"-----") {
        return Err((
            "an armored key in a .gpg file: apt reads .gpg files as binary".into(),
            "rename it to .asc, or convert it: gpg --dearmor < KEY > NAME.gpg".into(),
        ));
    } else if !matches!(data[0], 0x98..=0x9b | 0xc6) {
        // Old-format (0b10_0110_ll) or new-format (0xc6) public-key packet.
        return Err((
            "not an OpenPGP public key (the first packet is not a public key)".into(),
            "export the repository's key with gpg --export, or use its armored .asc".into(),
        ));
    }
    Ok(())
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
        let mut p: ImageProfile = parse_toml(&read(path)?, &file)?;
        check_schema(&file, p.schema)?;
        if let Some(b) = p.base.as_mut() {
            b.origin = Some(path.to_path_buf());
            b.validate()?;
        }
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

    /// A profile with one extra source in a fresh directory, and its keyring.
    fn profile_with(source: &str, keyring: Option<&[u8]>) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("p.toml");
        let text = format!(
            "schema = 1\nname = \"p\"\ndescription = \"t\"\nsource_date_epoch = 0\n[base]\npackages = [\"hello\"]\n[[base.sources]]\n{source}\n"
        );
        std::fs::write(&path, text).expect("write profile");
        if let Some(k) = keyring {
            std::fs::write(d.path().join("repo.gpg"), k).expect("write keyring");
        }
        (d, path)
    }

    const KEY: &[u8] = &[0x99, 0x00, 0x0d, 0x04, 1, 2, 3, 4];
    const SRC: &str = "uri = \"http://apt.example.org\"\nsuite = \"trixie\"\ncomponents = [\"main\", \"trixie-utils\"]\nkeyring = \"repo.gpg\"";

    fn load(path: &Path) -> Result<ImageProfile, InputError> {
        ImageProfile::load(path, &dirs().overlays())
    }

    #[test]
    fn source_parses_resolves_and_renders() {
        let (_d, path) = profile_with(&format!("{SRC}\narchitectures = [\"arm64\"]"), Some(KEY));
        let p = load(&path).unwrap_or_else(|e| panic!("{e}"));
        let base = p.base.expect("base");
        assert_eq!(base.origin.as_deref(), Some(path.as_path()));
        let r = base.resolve_sources().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].keyring_name, "repo.gpg");
        assert_eq!(r[0].keyring, KEY);
        assert_eq!(r[0].keyring_sha256, crate::blobs::sha256_hex(KEY));
        assert_eq!(
            r[0].source.one_line("/etc/apt/keyrings/repo.gpg"),
            "deb [arch=arm64 signed-by=\"/etc/apt/keyrings/repo.gpg\"] http://apt.example.org trixie main trixie-utils"
        );
    }

    #[test]
    fn missing_keyring_file_names_profile_field_and_fix() {
        let (_d, path) = profile_with(SRC, None);
        let base = load(&path).expect("structure is fine").base.expect("base");
        let e = base.resolve_sources().expect_err("no keyring file");
        assert_eq!(e.file, path.display().to_string(), "{e}");
        assert_eq!(e.key, "base.sources[0].keyring", "{e}");
        assert!(e.problem.contains("repo.gpg"), "{e}");
        assert!(
            e.fix.contains("OpenPGP key of http://apt.example.org"),
            "{e}"
        );
        assert!(
            e.fix
                .contains(&path.with_file_name("repo.gpg").display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn unsigned_source_is_refused_at_load() {
        let (_d, path) = profile_with(
            "uri = \"http://apt.example.org\"\nsuite = \"trixie\"\ncomponents = [\"main\"]",
            None,
        );
        let e = load(&path).expect_err("unsigned");
        assert_eq!(e.key, "base.sources[0].keyring", "{e}");
        assert!(
            e.problem.contains("unsigned repositories are refused"),
            "{e}"
        );
    }

    #[test]
    fn keyring_pin_mismatch_names_both_hashes() {
        let pin = "0".repeat(64);
        let (_d, path) = profile_with(&format!("{SRC}\nkeyring_sha256 = \"{pin}\""), Some(KEY));
        let base = load(&path).expect("load").base.expect("base");
        let e = base.resolve_sources().expect_err("pin mismatch");
        assert_eq!(e.key, "base.sources[0].keyring_sha256", "{e}");
        let sha = crate::blobs::sha256_hex(KEY);
        assert!(e.problem.contains(&sha) && e.problem.contains(&pin), "{e}");
        assert!(e.fix.contains(&sha), "{e}");
        // The right pin passes.
        let (_d, path) = profile_with(&format!("{SRC}\nkeyring_sha256 = \"{sha}\""), Some(KEY));
        let base = load(&path).expect("load").base.expect("base");
        base.resolve_sources().unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn bad_sources_are_rejected_with_their_field() {
        let cases: &[(&str, &str)] = &[
            ("uri = \"apt.example.org\"\nsuite = \"trixie\"\ncomponents = [\"main\"]\nkeyring = \"repo.gpg\"", "uri"),
            ("uri = \"http://x\"\nsuite = \"\"\ncomponents = [\"main\"]\nkeyring = \"repo.gpg\"", "suite"),
            ("uri = \"http://x\"\nsuite = \"trixie\"\nkeyring = \"repo.gpg\"", "components"),
            ("uri = \"http://x\"\nsuite = \"./\"\ncomponents = [\"main\"]\nkeyring = \"repo.gpg\"", "components"),
            ("uri = \"http://x\"\nsuite = \"trixie\"\ncomponents = [\"main contrib\"]\nkeyring = \"repo.gpg\"", "components"),
            ("uri = \"http://x\"\nsuite = \"trixie\"\ncomponents = [\"main\"]\nkeyring = \"../repo.gpg\"", "keyring"),
            ("uri = \"http://x\"\nsuite = \"trixie\"\ncomponents = [\"main\"]\nkeyring = \"repo.key\"", "keyring"),
            ("uri = \"http://x\"\nsuite = \"trixie\"\ncomponents = [\"main\"]\nkeyring = \"repo.gpg\"\nkeyring_sha256 = \"abc\"", "keyring_sha256"),
            ("uri = \"http://x\"\nsuite = \"trixie\"\ncomponents = [\"main\"]\nkeyring = \"repo.gpg\"\narchitectures = [\"ARM64\"]", "architectures"),
        ];
        for (src, field) in cases {
            let (_d, path) = profile_with(src, Some(KEY));
            let e = load(&path).expect_err(src);
            assert_eq!(e.key, format!("base.sources[0].{field}"), "{src}: {e}");
        }
        // A flat repository has no components.
        let (_d, path) = profile_with(
            "uri = \"http://x\"\nsuite = \"./\"\nkeyring = \"repo.gpg\"",
            Some(KEY),
        );
        load(&path).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn keyring_content_must_match_its_extension() {
        let armored =
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF\n-----END PGP PUBLIC KEY BLOCK-----\n";
        let (_d, path) = profile_with(SRC, Some(armored));
        let base = load(&path).expect("load").base.expect("base");
        let e = base.resolve_sources().expect_err("armored in .gpg");
        assert_eq!(e.key, "base.sources[0].keyring", "{e}");
        assert!(e.fix.contains("--dearmor"), "{e}");
        let (_d, path) = profile_with(SRC, Some(b"not a key"));
        let base = load(&path).expect("load").base.expect("base");
        assert!(base.resolve_sources().is_err());
        assert!(check_keyring(armored, "repo.asc").is_ok());
        assert!(check_keyring(KEY, "repo.asc").is_err());
        let mut kbx = vec![0u8, 0, 0, 32, 1, 1, 0, 0];
        kbx.extend_from_slice(b"KBXf");
        assert!(check_keyring(&kbx, "repo.gpg").is_err_and(|(p, _)| p.contains("keybox")));
    }

    #[test]
    fn armbian_profile_names_its_keyring() {
        let d = dirs();
        let (p, path) = d
            .load_profile("homecloud-armbian")
            .unwrap_or_else(|e| panic!("{e}"));
        let base = p.base.expect("base");
        let s = &base.sources[0];
        assert_eq!(s.uri, "http://apt.armbian.com");
        assert_eq!(s.suite, "trixie");
        assert_eq!(s.components, ["main", "trixie-utils"]);
        assert_eq!(s.keyring.as_deref(), Some("armbian.gpg"));
        // Without Armbian's key beside the profile, the error says where it goes.
        if !path.with_file_name("armbian.gpg").exists() {
            let e = base
                .resolve_sources()
                .expect_err("no keyring in the repository");
            assert_eq!(e.key, "base.sources[0].keyring", "{e}");
            assert!(e.fix.contains("images/armbian.gpg"), "{e}");
        }
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
