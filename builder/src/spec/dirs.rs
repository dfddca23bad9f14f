// SPDX-License-Identifier: Apache-2.0
//! Where the data files are read from: `boards/`, `images/`, `overlays/`.

use std::path::PathBuf;

use super::board::BoardSpec;
use super::profile::ImageProfile;
use crate::error::InputError;

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
        toml_names(&self.boards())
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

/// Stems of the `*.toml` files in `dir`, sorted (none if it is missing).
pub fn toml_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
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
