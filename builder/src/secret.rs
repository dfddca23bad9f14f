// SPDX-License-Identifier: Apache-2.0
//! The cluster secret on the build host: one file per cluster, made on first
//! use (0600) and reused, so every image of a cluster carries the same secret
//! and builds stay reproducible. Only its fingerprint is ever printed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hc_firstboot::secret::ClusterSecret;

use crate::error::InputError;

/// `$HC_SECRETS_DIR`, else `$XDG_CONFIG_HOME/hc-image/secrets`, else
/// `~/.config/hc-image/secrets`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HC_SECRETS_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("hc-image/secrets")
}

pub fn ensure(given: Option<&Path>, cluster: &str) -> Result<ClusterSecret> {
    let path = match given {
        Some(p) => {
            if !p.is_file() {
                return Err(InputError::new(
                    "command line",
                    "--cluster-secret",
                    format!("{} does not exist", p.display()),
                    "pass the secret file this cluster's other images were built with, or omit the option to use (or make) the default one",
                )
                .into());
            }
            p.to_path_buf()
        }
        None => default_dir().join(format!("{cluster}.key")),
    };
    if !path.exists() {
        let s = ClusterSecret::generate().map_err(anyhow::Error::msg)?;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(s.to_file_text().as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(
            "made a new cluster secret {} (fingerprint {}); build every image of cluster {cluster} with it",
            path.display(),
            s.fingerprint()
        );
        return Ok(s);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    ClusterSecret::parse(&text, &path.display().to_string()).map_err(|e| {
        InputError::new(
            path.display().to_string(),
            "(file)",
            e,
            "restore the file from a backup, or delete it to make a new secret (then rebuild every node's image)",
        )
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reused_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("c.key");
        std::fs::write(&p, "not hex").expect("write");
        assert!(ensure(Some(&p), "c").is_err());
        std::fs::remove_file(&p).expect("rm");
        assert!(ensure(Some(&p), "c").is_err(), "a named file must exist");
        std::env::set_var("HC_SECRETS_DIR", d.path());
        let a = ensure(None, "home").expect("made");
        let b = ensure(None, "home").expect("reused");
        assert_eq!(a, b);
        let mode = std::fs::metadata(d.path().join("home.key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
