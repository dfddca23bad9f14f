// SPDX-License-Identifier: Apache-2.0
//! Image profiles (`images/<name>.toml`): what goes onto an image, on any
//! board: overlays, file modes, the disk's root, the package base.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::apt::BaseSpec;
use super::load::{check_schema, read};
use crate::error::{parse_toml, InputError};
use crate::size::Size;

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
    /// Service images (recipes of `images/containers/`) carried in the
    /// image for the board's architecture; first boot seeds each node's
    /// registry with them. Must include `registry` when not empty.
    #[serde(default)]
    pub containers: Vec<String>,
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
