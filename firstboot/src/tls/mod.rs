// SPDX-License-Identifier: Apache-2.0
//! The cluster's own certificate authority (issue 15): a home domain such
//! as `home.arpa` gets no public certificate. The founder makes the CA and
//! a certificate for `<domain>` and `*.<domain>` once; every other node
//! fetches them over the join channel, the keys only when homecloud.toml
//! lets the node be a manager. The CA certificate is copied to HCBOOT as
//! `homecloud-ca.crt`, for the family's phones and laptops. The CA is
//! name-constrained to the domain, so installing it trusts nothing else.
//! Made with the image's openssl: no crypto code in the agent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cluster::duty::ClusterView;
use crate::cluster::join::{fetch_from_members, JoinAnswer, JoinRefusal, JoinRequest};
use crate::cluster::peers::FOUNDER;
use crate::config::Role;
use crate::engine::{Ctx, Observed, Result, Step, CONFIG_PATHS};
use crate::host::files::{write_atomic, write_atomic_fat, PUBLIC, SECRET};

pub const CA_CRT: &str = "/var/lib/hc-firstboot/tls/ca.crt";
pub const CA_KEY: &str = "/var/lib/hc-firstboot/tls/ca.key";
/// The certificate for `<domain>` and `*.<domain>`, and its key.
pub const CRT: &str = "/var/lib/hc-firstboot/tls/site.crt";
pub const KEY: &str = "/var/lib/hc-firstboot/tls/site.key";
/// The CA certificate's name on HCBOOT, beside homecloud.toml.
pub const BOOT_FILE: &str = "homecloud-ca.crt";
const TOPIC: &str = "tls";
const CA_DAYS: &str = "3650";
/// Apple's limit for server certificates from a CA the user installed.
const CRT_DAYS: &str = "825";

/// What a member hands out: the CA certificate always, the keys and the
/// site certificate to nodes that may be managers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub ca_crt: String,
    #[serde(default)]
    pub ca_key: Option<String>,
    #[serde(default)]
    pub crt: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

impl Bundle {
    /// What this node holds, or None before it has the CA certificate.
    pub fn load(cx: &Ctx) -> Option<Bundle> {
        let read = |p: &str| std::fs::read_to_string(cx.path(p)).ok();
        Some(Bundle {
            ca_crt: read(CA_CRT)?,
            ca_key: read(CA_KEY),
            crt: read(CRT),
            key: read(KEY),
        })
    }

    /// Keys first and the CA certificate last: `load` sees a whole bundle
    /// or none after a power cut.
    fn save(&self, cx: &Ctx) -> Result<()> {
        for (p, v, mode) in [
            (CA_KEY, &self.ca_key, SECRET),
            (KEY, &self.key, SECRET),
            (CRT, &self.crt, PUBLIC),
        ] {
            if let Some(v) = v {
                write_atomic(&cx.path(p), v.as_bytes(), mode)?;
            }
        }
        write_atomic(&cx.path(CA_CRT), self.ca_crt.as_bytes(), PUBLIC)
    }

    /// The bundle for a node that never becomes a manager: no keys.
    pub fn public(&self) -> Bundle {
        Bundle {
            ca_crt: self.ca_crt.clone(),
            ..Bundle::default()
        }
    }

    fn whole(&self) -> bool {
        self.ca_key.is_some() && self.crt.is_some() && self.key.is_some()
    }
}

/// Whether homecloud.toml lets the node with this MAC be a manager (an
/// unlisted node may be; `roles = ["worker"]` never is).
pub fn may_manage(cx: &Ctx, mac: &str) -> bool {
    cx.config
        .node_by_mac(mac)
        .is_none_or(|n| !n.roles.contains(&Role::Worker))
}

fn openssl(cx: &Ctx, args: &[&str]) -> Result<String> {
    let mut argv = vec!["openssl"];
    argv.extend_from_slice(args);
    cx.runner.run(&argv)
}

/// An EC P-256 key, written root-only (openssl prints it; it never lands
/// in a file with the umask's mode). Kept when it exists: a power cut
/// between key and certificate reuses it.
fn ensure_key(cx: &Ctx, f: &str) -> Result<()> {
    if cx.path(f).is_file() {
        return Ok(());
    }
    let key = openssl(
        cx,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
    )?;
    write_atomic(&cx.path(f), key.as_bytes(), SECRET)
}

/// The founder's part: the CA, then the site certificate; each kept when
/// it exists, so a repeat after a power cut changes nothing made.
pub fn make(cx: &Ctx) -> Result<()> {
    let domain = cx.config.cluster.domain.clone();
    ensure_key(cx, CA_KEY)?;
    if !cx.path(CA_CRT).is_file() {
        let ca_key = cx.path(CA_KEY).display().to_string();
        let subj = format!("/O=homecloud/CN=homecloud CA {}", cx.config.cluster.name);
        let constraint = format!("nameConstraints=critical,permitted;DNS:{domain}");
        let crt = openssl(
            cx,
            &[
                "req",
                "-new",
                "-x509",
                "-key",
                &ca_key,
                "-sha256",
                "-days",
                CA_DAYS,
                "-subj",
                &subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE,pathlen:0",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-addext",
                &constraint,
            ],
        )?;
        write_atomic(&cx.path(CA_CRT), crt.as_bytes(), PUBLIC)?;
    }
    ensure_key(cx, KEY)?;
    if !cx.path(CRT).is_file() {
        let (key, ca, ca_key) = (
            cx.path(KEY).display().to_string(),
            cx.path(CA_CRT).display().to_string(),
            cx.path(CA_KEY).display().to_string(),
        );
        let subj = format!("/CN={domain}");
        let san = format!("subjectAltName=DNS:{domain},DNS:*.{domain}");
        let crt = openssl(
            cx,
            &[
                "req",
                "-new",
                "-x509",
                "-key",
                &key,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-sha256",
                "-days",
                CRT_DAYS,
                "-subj",
                &subj,
                "-addext",
                &san,
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "keyUsage=critical,digitalSignature",
                "-addext",
                "extendedKeyUsage=serverAuth",
            ],
        )?;
        write_atomic(&cx.path(CRT), crt.as_bytes(), PUBLIC)?;
    }
    Ok(())
}

/// The SHA-256 fingerprint of a PEM certificate's DER, as phones show it.
pub fn fingerprint(pem: &str) -> Option<String> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    let hex = hex::encode_upper(Sha256::digest(der));
    Some(
        hex.as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// HCBOOT's directory on this board (where homecloud.toml is).
fn boot_dir(cx: &Ctx) -> Option<PathBuf> {
    CONFIG_PATHS
        .iter()
        .map(|c| cx.path(c))
        .find(|c| c.is_file())
        .and_then(|c| c.parent().map(Path::to_path_buf))
}

/// Copies the CA certificate to HCBOOT unless it is there already.
fn copy_to_boot(cx: &Ctx, ca_crt: &str) -> Result<()> {
    let Some(dir) = boot_dir(cx) else {
        return Ok(()); // no HCBOOT mounted: nothing to copy to
    };
    let f = dir.join(BOOT_FILE);
    if std::fs::read_to_string(&f).is_ok_and(|s| s == ca_crt) {
        return Ok(());
    }
    write_atomic_fat(&f, ca_crt.as_bytes())
}

/// The `tls` step: the cluster CA and site certificate on this node.
pub struct Tls;

impl Step for Tls {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        let Some(b) = Bundle::load(cx) else {
            return Ok(Observed::Pending);
        };
        let manager = cx.lan()?.is_none_or(|l| may_manage(cx, &l.mac));
        if manager && !b.whole() {
            return Ok(Observed::Pending);
        }
        if let Some(dir) = boot_dir(cx) {
            if std::fs::read_to_string(dir.join(BOOT_FILE)).ok().as_ref() != Some(&b.ca_crt) {
                return Ok(Observed::Pending);
            }
        }
        Ok(Observed::Done(BTreeMap::from([
            (
                "ca".to_string(),
                fingerprint(&b.ca_crt).unwrap_or_else(|| "unreadable".into()),
            ),
            (
                "keys".to_string(),
                if b.whole() {
                    "held"
                } else {
                    "not on this node"
                }
                .to_string(),
            ),
        ])))
    }

    fn apply(&self, cx: &Ctx) -> Result<()> {
        let b = match Bundle::load(cx) {
            Some(b) if b.whole() || !cx.lan()?.is_none_or(|l| may_manage(cx, &l.mac)) => b,
            _ if cx.path(FOUNDER).is_file() => {
                make(cx)?;
                Bundle::load(cx).ok_or("the cluster CA was not written")?
            }
            _ => {
                let l = cx.lan()?.ok_or("no LAN address")?;
                let b: Bundle =
                    fetch_from_members(cx, &l, TOPIC, "the cluster CA", Duration::from_secs(1800))?;
                b.save(cx)?;
                b
            }
        };
        copy_to_boot(cx, &b.ca_crt)
    }

    fn status(&self, cx: &Ctx) -> Vec<String> {
        match Bundle::load(cx) {
            Some(b) => vec![format!(
                "  cluster CA {} ({BOOT_FILE} on HCBOOT)",
                fingerprint(&b.ca_crt).unwrap_or_else(|| "unreadable".into())
            )],
            None => vec!["  no cluster CA yet".into()],
        }
    }
}

/// Hands out the bundle over the join channel.
pub struct Answer;

impl JoinAnswer for Answer {
    fn topic(&self) -> &'static str {
        TOPIC
    }

    fn answer(
        &self,
        cx: &Ctx,
        _view: &ClusterView,
        req: &JoinRequest,
    ) -> std::result::Result<Value, JoinRefusal> {
        let b = Bundle::load(cx)
            .filter(Bundle::whole)
            .ok_or_else(|| JoinRefusal::NotYet {
                reason: "no cluster CA here yet".into(),
            })?;
        let b = if may_manage(cx, &req.node) {
            b
        } else {
            b.public()
        };
        serde_json::to_value(b).map_err(|e| JoinRefusal::Failed {
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;
