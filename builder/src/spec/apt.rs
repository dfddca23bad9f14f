// SPDX-License-Identifier: Apache-2.0
//! The package base of a profile (`[base]`): suite, mirror, packages and
//! extra apt sources with their keyrings.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::load::is_hex64;
use crate::error::InputError;

/// The Debian mirror for package bases, blobs and the agent's toolchain,
/// unless a profile or `HC_DEBIAN_MIRROR` names another.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

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
            let sha = crate::io::sha256_hex(&data);
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
pub(super) fn check_keyring(data: &[u8], name: &str) -> Result<(), (String, String)> {
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
    DEFAULT_MIRROR.into()
}
fn default_components() -> Vec<String> {
    vec!["main".into()]
}
fn default_variant() -> String {
    "minbase".into()
}
