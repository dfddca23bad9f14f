// SPDX-License-Identifier: Apache-2.0
//! The cluster secret (device and build host): 32 random bytes the builder
//! generates once per cluster and puts in the image at
//! `/etc/hc-image/cluster.key` (root, 0600; never on the FAT partition).
//! Every key the agent uses is derived from it with HKDF, one per purpose,
//! so the secret itself never travels and is never logged.

use std::fmt;
use std::path::Path;

use hkdf::Hkdf;
use sha2::Sha256;

pub const SECRET_PATH: &str = "/etc/hc-image/cluster.key";

#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; 32]);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret(fingerprint {})", self.fingerprint())
    }
}

impl ClusterSecret {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        ClusterSecret(b)
    }

    pub fn generate() -> std::result::Result<Self, String> {
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b).map_err(|e| format!("no randomness: {e}"))?;
        Ok(ClusterSecret(b))
    }

    /// The file format: 64 hex digits and a newline.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", hex::encode(self.0))
    }

    pub fn parse(text: &str, origin: &str) -> std::result::Result<Self, String> {
        let t = text.trim();
        let bytes = hex::decode(t).map_err(|_| {
            format!("{origin}: not a cluster secret (expected 64 hex digits); restore it from the file the builder made, or build a new image")
        })?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            format!("{origin}: a cluster secret is 32 bytes (64 hex digits); restore it from the file the builder made")
        })?;
        Ok(ClusterSecret(arr))
    }

    /// Reads the secret under `root`; refuses a file others can read.
    pub fn load(root: &Path) -> std::result::Result<Self, String> {
        use std::os::unix::fs::PermissionsExt;
        let p = root.join(SECRET_PATH.trim_start_matches('/'));
        let meta = std::fs::metadata(&p).map_err(|e| {
            format!("{SECRET_PATH}: {e}; this image was built without a cluster secret, rebuild it with hc-image build")
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "{SECRET_PATH}: mode {:o} lets other users read the cluster secret; chmod 0600 it",
                meta.permissions().mode() & 0o777
            ));
        }
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{SECRET_PATH}: {e}"))?;
        Self::parse(&text, SECRET_PATH)
    }

    /// A key for one purpose (`label`), independent of every other purpose.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(b"hc-image cluster secret v1"), &self.0);
        let mut out = [0u8; 32];
        // 32 bytes is always a valid HKDF-SHA256 output length.
        if hk.expand(label.as_bytes(), &mut out).is_err() {
            out = [0u8; 32];
        }
        out
    }

    /// Safe to show: tells two secrets apart without revealing either.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.derive("fingerprint")[..6])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose_and_secret() {
        let a = ClusterSecret::from_bytes([1; 32]);
        let b = ClusterSecret::from_bytes([2; 32]);
        assert_ne!(a.derive("announce"), a.derive("join"));
        assert_ne!(a.derive("announce"), b.derive("announce"));
        assert_eq!(a.derive("join"), a.clone().derive("join"));
        assert!(!format!("{a:?}").contains("0101"));
    }

    #[test]
    fn file_round_trip_and_bad_text() {
        let a = ClusterSecret::generate().expect("random");
        let b = ClusterSecret::parse(&a.to_file_text(), "t").expect("parse");
        assert_eq!(a, b);
        assert!(ClusterSecret::parse("abcd", "t").is_err());
        assert!(ClusterSecret::parse("zz", "t").is_err());
    }

    #[test]
    fn world_readable_secret_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("etc/hc-image");
        std::fs::create_dir_all(&p).expect("mkdir");
        let f = p.join("cluster.key");
        std::fs::write(&f, ClusterSecret::from_bytes([7; 32]).to_file_text()).expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = ClusterSecret::load(d.path()).expect_err("must refuse");
        assert!(e.contains("chmod 0600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            ClusterSecret::load(d.path()).expect("load"),
            ClusterSecret::from_bytes([7; 32])
        );
    }
}
