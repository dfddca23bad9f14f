// SPDX-License-Identifier: Apache-2.0
//! The LAN side of the node: which interface, its MAC and IPv4 address.
//! docker.io adds `docker0` and bridges, so the LAN is chosen by default
//! route or MAC, never "the first interface".

use std::net::Ipv4Addr;
use std::path::Path;

use super::files::read_trimmed;
use crate::config::normalize_mac;
use crate::exec::{Result, Runner};

/// The LAN interface, its MAC and IPv4 address, prefix and broadcast.
#[derive(Debug, Clone)]
pub struct Lan {
    pub interface: String,
    pub mac: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub broadcast: Ipv4Addr,
}

impl Lan {
    /// The LAN's network in CIDR form, e.g. `10.77.0.0/24`.
    pub fn network(&self) -> String {
        let bits = u32::from(self.addr);
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        format!("{}/{}", Ipv4Addr::from(bits & mask), self.prefix)
    }
}

/// The LAN interface and its MAC: the default route's, else the first
/// physical NIC with a MAC address.
pub fn lan_interface(root: &Path) -> Result<(String, String)> {
    let by_route = read_trimmed(&root.join("proc/net/route")).and_then(|t| {
        t.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_string())
        })
    });
    let mut names: Vec<String> = std::fs::read_dir(root.join("sys/class/net"))
        .map_err(|e| format!("listing network interfaces: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| {
            !["lo", "docker", "veth", "br-", "virbr", "tap", "tun"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    names.sort();
    let mac_of = |n: &str| {
        read_trimmed(&root.join(format!("sys/class/net/{n}/address")))
            .and_then(|m| normalize_mac(&m))
    };
    let pick = by_route
        .into_iter()
        .chain(names)
        .find(|n| mac_of(n).is_some_and(|m| m != "00:00:00:00:00:00"));
    let name = pick.ok_or("no network interface with a MAC address")?;
    let mac = mac_of(&name).ok_or("unreadable MAC")?;
    Ok((name, mac))
}

/// The LAN with its address, or None while it has no IPv4 address yet.
/// `interface` is `network.interface` when the user named one.
pub fn lan(root: &Path, runner: &dyn Runner, interface: Option<&str>) -> Result<Option<Lan>> {
    let (iface, mac) = match interface {
        Some(i) => {
            let m = std::fs::read_to_string(root.join(format!("sys/class/net/{i}/address")))
                .map_err(|e| format!("network.interface {i}: {e}"))?;
            (i.to_string(), m.trim().to_lowercase())
        }
        None => lan_interface(root)?,
    };
    let out = runner.run(&["ip", "-4", "-o", "addr", "show", "dev", &iface])?;
    Ok(parse_ip_addr(&out).map(|(addr, prefix, broadcast)| Lan {
        interface: iface,
        mac,
        addr,
        prefix,
        broadcast,
    }))
}

/// First global IPv4 of `ip -4 -o addr show` output (a VIP is /32 and comes
/// after the DHCP address, so the first one is the node's own).
pub fn parse_ip_addr(out: &str) -> Option<(Ipv4Addr, u8, Ipv4Addr)> {
    out.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let i = w.iter().position(|x| *x == "inet")?;
        let (a, p) = w.get(i + 1)?.split_once('/')?;
        let addr: Ipv4Addr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        if w.contains(&"host") || prefix > 30 {
            return None;
        }
        let brd = w
            .iter()
            .position(|x| *x == "brd")
            .and_then(|j| w.get(j + 1)?.parse().ok())
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(addr) | (u32::MAX >> prefix)));
        Some((addr, prefix, brd))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addr_output_parses_first_global_address() {
        let out = "2: enp0s1    inet 10.77.0.101/24 brd 10.77.0.255 scope global dynamic enp0s1\\       valid_lft 3500sec\n2: enp0s1    inet 10.77.0.10/24 scope global secondary enp0s1\n";
        assert_eq!(
            parse_ip_addr(out),
            Some((
                Ipv4Addr::new(10, 77, 0, 101),
                24,
                Ipv4Addr::new(10, 77, 0, 255)
            ))
        );
        assert_eq!(
            parse_ip_addr("1: lo    inet 127.0.0.1/8 scope host lo"),
            None
        );
        assert_eq!(parse_ip_addr(""), None);
    }
}
