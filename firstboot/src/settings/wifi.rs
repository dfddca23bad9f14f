// SPDX-License-Identifier: Apache-2.0
//! `[wifi]`: every radio of the node joins a WPA2/WPA3-PSK network and
//! takes its address from systemd-networkd (DHCP, or in static mode the
//! address of its MAC). Radios appear when udev loads their driver, maybe
//! after this step ran, so nothing here names an interface: udev starts
//! `hc-wifi@IFACE` (wpa_supplicant with the file below, root's only, the
//! one place the passphrase is kept besides HCBOOT) for each radio, and
//! the networkd file matches any station. Without `[wifi]` the files go
//! and the units find nothing to run with.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::{AddressMode, Wifi};
use crate::engine::{Ctx, Observed, Result, Step};
use crate::host::files::{write_atomic, PUBLIC, SECRET};

pub struct WifiStep;

/// hc-wifi@.service's ConditionPathExists and wpa_supplicant's `-c`.
pub const CONF: &str = "/etc/hc-image/wifi.conf";
const NETWORK: &str = "/etc/systemd/network/20-hc-wifi.network";

fn unit(iface: &str) -> String {
    format!("hc-wifi@{iface}.service")
}

/// Wireless interfaces (they have `phy80211`), by name.
pub fn radios(cx: &Ctx) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cx.path("/sys/class/net"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("phy80211").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// wpa_supplicant's file. The SSID in hex (any bytes are safe); the
/// passphrase quoted (checked at load: printable ASCII, 8-63), which WPA2
/// and WPA3 (SAE) both use; management frames protected when the AP can.
pub fn supplicant_conf(w: &Wifi) -> String {
    format!(
        "# Written by hc-firstboot from homecloud.toml [wifi]; edit that file on HCBOOT.\n\
         ctrl_interface=DIR=/run/wpa_supplicant GROUP=root\n\
         update_config=0\n\
         country={}\n\
         network={{\n\
         \tssid={}\n\
         \tpsk=\"{}\"\n\
         \tkey_mgmt=WPA-PSK WPA-PSK-SHA256 SAE\n\
         \tieee80211w=1\n\
         \tscan_ssid=1\n\
         }}\n",
        w.country,
        hex(w.ssid.as_bytes()),
        w.psk
    )
}

/// networkd's file for every radio in station mode: DHCP. In static mode
/// settings::address's file (by MAC, sorting first) gives the address.
pub const NETWORK_FILE: &str = "# Written by hc-firstboot from homecloud.toml [wifi].\n\
     [Match]\nWLANInterfaceType=station\n\n[Network]\nDHCP=yes\n";

/// Every file this step owns, with what it must hold (None: absent).
fn wanted(cx: &Ctx) -> Vec<(PathBuf, Option<Vec<u8>>, u32)> {
    let w = cx.config.wifi.as_ref();
    let dhcp = cx.config.network.mode == AddressMode::Dhcp;
    vec![
        (
            cx.path(CONF),
            w.map(|w| supplicant_conf(w).into_bytes()),
            SECRET,
        ),
        (
            cx.path(NETWORK),
            w.filter(|_| dhcp).map(|_| NETWORK_FILE.as_bytes().to_vec()),
            PUBLIC,
        ),
    ]
}

fn matches(cx: &Ctx) -> bool {
    wanted(cx).iter().all(|(p, want, _)| match want {
        Some(b) => std::fs::read(p).ok().as_deref() == Some(b.as_slice()),
        None => !p.exists(),
    })
}

/// What `hc status` says of the link: connected, refused passphrase, or
/// still looking. The journal is read for the reason, never the file.
fn link_state(cx: &Ctx, iface: &str) -> String {
    let st = cx
        .runner
        .run(&["wpa_cli", "-i", iface, "status"])
        .unwrap_or_default();
    let field = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    if field("wpa_state").as_deref() == Some("COMPLETED") {
        return format!(
            "connected to {} ({})",
            field("ssid").unwrap_or_default(),
            field("ip_address").unwrap_or_else(|| "no address yet".into())
        );
    }
    let log = cx
        .runner
        .run(&[
            "journalctl",
            "-b",
            "-q",
            "-o",
            "cat",
            "-n",
            "400",
            "-u",
            &unit(iface),
        ])
        .unwrap_or_default();
    if last_event_is_wrong_key(&log) {
        return "the network refused the passphrase: check wifi.psk in homecloud.toml".into();
    }
    format!(
        "not connected ({}): looking for the network",
        field("wpa_state").unwrap_or_else(|| "wpa_supplicant not answering".into())
    )
}

/// Whether wpa_supplicant's last verdict in `log` is a wrong key.
pub fn last_event_is_wrong_key(log: &str) -> bool {
    log.lines()
        .rev()
        .find_map(|l| {
            if l.contains("CTRL-EVENT-CONNECTED") {
                Some(false)
            } else if l.contains("reason=WRONG_KEY")
                || l.contains("pre-shared key may be incorrect")
            {
                Some(true)
            } else {
                None
            }
        })
        .unwrap_or(false)
}

impl Step for WifiStep {
    fn name(&self) -> &'static str {
        "wifi"
    }
    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        Ok(if matches(cx) {
            let on = if cx.config.wifi.is_some() {
                "on"
            } else {
                "off"
            };
            Observed::Done(BTreeMap::from([("wifi".into(), on.into())]))
        } else {
            Observed::Pending
        })
    }
    fn apply(&self, cx: &Ctx) -> Result<()> {
        for (path, want, mode) in wanted(cx) {
            match want {
                Some(b) => write_atomic(&path, &b, mode)?,
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(format!("removing {}: {e}", path.display()))
                    }
                    _ => {}
                },
            }
        }
        // At boot udev's jobs wait for this step (After=hc-settings) and
        // read the file when they start. A radio systemd already knows (a
        // later run) is restarted or stopped here; starting one it does not
        // know yet would fail its BindsTo, so that is left to udev.
        for r in radios(cx) {
            let device = format!("sys-subsystem-net-devices-{r}.device");
            if cx
                .runner
                .run(&["systemctl", "is-active", "--quiet", &device])
                .is_err()
            {
                continue;
            }
            let verb = if cx.config.wifi.is_some() {
                "restart"
            } else {
                "stop"
            };
            let _ = cx.runner.run(&["systemctl", verb, "--no-block", &unit(&r)]);
        }
        if cx
            .runner
            .run(&["systemctl", "is-active", "--quiet", "systemd-networkd"])
            .is_ok()
        {
            let _ = cx.runner.run(&["networkctl", "reload"]);
        }
        Ok(())
    }
    fn status(&self, cx: &Ctx) -> Vec<String> {
        let Some(w) = &cx.config.wifi else {
            return Vec::new();
        };
        let radios = radios(cx);
        if radios.is_empty() {
            return vec!["  wifi: no radio on this node: it stays on its wire".into()];
        }
        radios
            .iter()
            .map(|r| format!("  wifi: {r} {:?}: {}", w.ssid, link_state(cx, r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wifi(ssid: &str, psk: &str) -> Wifi {
        Wifi {
            ssid: ssid.into(),
            psk: psk.into(),
            country: "DE".into(),
        }
    }

    #[test]
    fn the_ssid_goes_in_hex_and_the_passphrase_quoted() {
        let c = supplicant_conf(&wifi("Home \"5G\"", "a \"quoted\" pass"));
        assert!(c.contains("\tssid=486f6d652022354722\n"), "{c}");
        assert!(c.contains("\tpsk=\"a \"quoted\" pass\"\n"), "{c}");
        assert!(c.contains("country=DE\n") && c.contains("SAE"), "{c}");
    }

    #[test]
    fn the_last_verdict_in_the_log_counts() {
        let wrong = "wlan0: CTRL-EVENT-SSID-TEMP-DISABLED id=0 ssid=\"x\" auth_failures=1 duration=10 reason=WRONG_KEY\n";
        let ok = "wlan0: CTRL-EVENT-CONNECTED - Connection to 02:00:00:00:01:00 completed [id=0 id_str=]\n";
        assert!(last_event_is_wrong_key(wrong));
        assert!(!last_event_is_wrong_key(&format!("{wrong}{ok}")));
        assert!(last_event_is_wrong_key(&format!("{ok}{wrong}")));
        assert!(!last_event_is_wrong_key("wlan0: Trying to associate\n"));
    }
}
