// SPDX-License-Identifier: Apache-2.0
//! `network.mode = "static"`: this node's `address`, the `gateway` and `dns`
//! as a systemd-networkd file that sorts before the image's DHCP one
//! (80-hc-lan.network), written before networkd starts. A node the file
//! does not list gets no address at all (never a guessed one) and the step
//! fails with the fix. DHCP mode removes the file.

use std::collections::BTreeMap;

use crate::config::{normalize_mac, static_dns, AddressMode, HomecloudConfig};
use crate::engine::{Ctx, Observed, Result, Step};
use crate::host::files::{read_trimmed, write_atomic, PUBLIC};

pub struct Address;

pub const FILE: &str = "/etc/systemd/network/10-hc-static.network";

/// The physical NICs and their MACs, by name (docker's and virtual ones
/// have no `device` link).
fn nics(cx: &Ctx) -> Vec<(String, String)> {
    let dir = cx.path("/sys/class/net");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("device").exists())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mac = read_trimmed(&e.path().join("address")).and_then(|m| normalize_mac(&m))?;
            Some((name, mac))
        })
        .collect();
    out.sort();
    out
}

/// What the file must say: `Ok(None)` in DHCP mode (no file), `Err` with
/// the file to write when static mode does not list this node.
pub fn render(
    config: &HomecloudConfig,
    nics: &[(String, String)],
) -> std::result::Result<Option<String>, (String, String)> {
    if config.network.mode != AddressMode::Static {
        return Ok(None);
    }
    let head = "# Written by hc-firstboot from homecloud.toml (network.mode = \"static\");\n\
                # edit that file on HCBOOT, not this one.\n";
    let mine = nics
        .iter()
        .filter(|(n, _)| config.network.interface.as_deref().is_none_or(|i| i == n))
        .find_map(|(n, m)| config.node_by_mac(m).map(|node| (n, m, node)));
    let Some((iface, mac, node)) = mine else {
        let seen: Vec<String> = nics.iter().map(|(n, m)| format!("{n} {m}")).collect();
        let file = format!(
            "{head}# This node is not listed: no address rather than a guessed one.\n\
             [Match]\nType=ether\nName=en* eth* end*\n\n[Network]\nDHCP=no\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        );
        return Err((
            file,
            format!(
                "network.mode is \"static\" but homecloud.toml lists none of this node's \
                 interfaces ({}); it takes no address. Fix: add a [[nodes]] entry with this \
                 MAC and an `address`, or set network.mode = \"dhcp\"",
                if seen.is_empty() {
                    "none found".into()
                } else {
                    seen.join(", ")
                }
            ),
        ));
    };
    // Validated at load: static mode has an address for every node and a gateway.
    let address = node.address.clone().unwrap_or_default();
    let gateway = config.network.gateway.clone().unwrap_or_default();
    let mut t = format!(
        "{head}# {} on {iface}.\n[Match]\nMACAddress={mac}\n\n[Network]\n\
         DHCP=no\nAddress={address}\nGateway={gateway}\n",
        node.name
    );
    for d in static_dns(&config.network) {
        t.push_str(&format!("DNS={d}\n"));
    }
    Ok(Some(t))
}

impl Step for Address {
    fn name(&self) -> &'static str {
        "address"
    }
    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        let have = std::fs::read_to_string(cx.path(FILE)).ok();
        Ok(match render(&cx.config, &nics(cx)) {
            Ok(None) if have.is_none() => {
                Observed::Done(BTreeMap::from([("mode".into(), "dhcp".into())]))
            }
            Ok(Some(want)) if have.as_deref() == Some(want.as_str()) => {
                let addr = want
                    .lines()
                    .find_map(|l| l.strip_prefix("Address="))
                    .unwrap_or_default()
                    .to_string();
                Observed::Done(BTreeMap::from([
                    ("mode".into(), "static".into()),
                    ("address".into(), addr),
                ]))
            }
            _ => Observed::Pending,
        })
    }
    fn apply(&self, cx: &Ctx) -> Result<()> {
        let path = cx.path(FILE);
        let result = match render(&cx.config, &nics(cx)) {
            Ok(None) => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("removing {}: {e}", path.display()))
                }
                _ => Ok(()),
            },
            Ok(Some(want)) => write_atomic(&path, want.as_bytes(), PUBLIC),
            Err((file, why)) => write_atomic(&path, file.as_bytes(), PUBLIC).and(Err(why)),
        };
        // At boot this runs before networkd; a later run (an edit applied by
        // `hc-firstboot run`) has it re-read its files. Best effort: the file
        // is what counts at the next boot.
        if cx
            .runner
            .run(&["systemctl", "is-active", "--quiet", "systemd-networkd"])
            .is_ok()
        {
            let _ = cx.runner.run(&["networkctl", "reload"]);
        }
        result
    }
    fn status(&self, cx: &Ctx) -> Vec<String> {
        match render(&cx.config, &nics(cx)) {
            Ok(None) => vec!["  address: DHCP from the router".into()],
            Ok(Some(t)) => t
                .lines()
                .filter_map(|l| l.strip_prefix("Address="))
                .map(|a| format!("  address: {a} (static)"))
                .collect(),
            Err((_, why)) => vec![format!("  address: none: {why}")],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> HomecloudConfig {
        HomecloudConfig::parse(
            &format!(
                "schema = 1\n[cluster]\nname = \"h\"\ndomain = \"home.arpa\"\n{extra}\n\
                 [[nodes]]\nname = \"node1\"\nmac = \"52:54:00:12:34:01\"\n{}",
                if extra.contains("static") {
                    "address = \"10.80.0.11/24\"\n"
                } else {
                    ""
                }
            ),
            "test.toml",
        )
        .expect("config")
    }

    const STATIC: &str =
        "[network]\nmode = \"static\"\ngateway = \"10.80.0.1\"\ndns = [\"10.80.0.1\", \"9.9.9.9\"]";

    #[test]
    fn dhcp_mode_wants_no_file() {
        assert_eq!(
            render(&cfg(""), &[("eth0".into(), "52:54:00:12:34:01".into())]),
            Ok(None)
        );
    }

    #[test]
    fn a_listed_node_gets_its_address_gateway_and_dns_on_its_mac() {
        let nics = [
            ("enp0s1".to_string(), "52:54:00:aa:bb:cc".to_string()),
            ("enp0s2".to_string(), "52:54:00:12:34:01".to_string()),
        ];
        let t = render(&cfg(STATIC), &nics)
            .expect("listed")
            .expect("a file");
        assert!(t.contains("[Match]\nMACAddress=52:54:00:12:34:01\n"), "{t}");
        assert!(
            t.contains(
                "DHCP=no\nAddress=10.80.0.11/24\nGateway=10.80.0.1\nDNS=10.80.0.1\nDNS=9.9.9.9\n"
            ),
            "{t}"
        );
        assert!(t.contains("node1 on enp0s2"), "{t}");
    }

    #[test]
    fn an_unlisted_node_takes_no_address_and_says_how_to_fix_it() {
        let nics = [("eth0".to_string(), "52:54:00:00:00:99".to_string())];
        let (file, why) = render(&cfg(STATIC), &nics).expect_err("unlisted");
        assert!(
            file.contains("DHCP=no") && file.contains("LinkLocalAddressing=no"),
            "{file}"
        );
        assert!(!file.contains("Address="), "{file}");
        assert!(
            why.contains("eth0 52:54:00:00:00:99") && why.contains("[[nodes]]"),
            "{why}"
        );
    }

    #[test]
    fn network_interface_limits_which_nic_is_matched() {
        let c = cfg(&format!("{STATIC}\ninterface = \"eth1\""));
        let nics = [("eth0".to_string(), "52:54:00:12:34:01".to_string())];
        assert!(
            render(&c, &nics).is_err(),
            "the listed MAC is on another interface"
        );
    }
}
