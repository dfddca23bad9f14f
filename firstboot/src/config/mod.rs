// SPDX-License-Identifier: Apache-2.0
//! The user's cluster description, `homecloud.toml`.
//!
//! Parsed on the build host (`hc-image config check`, baked into the image's
//! FAT partition) and again on the device by the agent at every boot, since
//! the user may edit it from any OS. Every error names the file, the key path
//! and the fix.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub mod sshkey;

/// The only `schema` value this version understands.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
/// One homecloud: every node flashed with the same image reads this file.
pub struct HomecloudConfig {
    /// Format version of this file. Must be 1.
    pub schema: u32,
    pub cluster: Cluster,
    #[serde(default)]
    pub network: Network,
    /// Known nodes, matched by MAC address. Nodes not listed get a name in join order.
    #[serde(default)]
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub ssh: Ssh,
    pub wifi: Option<Wifi>,
    /// Services to deploy, keyed by service name.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    pub backup: Option<Backup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Cluster name: a DNS label (lowercase letters, digits, '-').
    pub name: String,
    /// DNS domain the services answer under, e.g. `home.arpa`.
    pub domain: String,
    /// IANA time zone for every node.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

fn default_timezone() -> String {
    "Etc/UTC".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum AddressMode {
    #[default]
    Dhcp,
    Static,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `dhcp` (default) or `static` (then every node needs `address`).
    #[serde(default)]
    pub mode: AddressMode,
    /// LAN interface name, or unset to pick the interface of the default route.
    pub interface: Option<String>,
    /// Virtual IP that follows a healthy node, as `a.b.c.d/prefix`.
    pub vip: Option<String>,
    /// Default gateway (static mode).
    pub gateway: Option<String>,
    /// DNS servers (static mode).
    #[serde(default)]
    pub dns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Swarm manager and Ceph monitor candidate.
    Manager,
    /// Swarm worker only.
    Worker,
    /// Runs a Ceph OSD on `storage.osd_device`.
    Storage,
    /// May hold the VIP and run Traefik.
    Ingress,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
            Role::Storage => "storage",
            Role::Ingress => "ingress",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Hostname: a DNS label.
    pub name: String,
    /// MAC address of the node's LAN interface, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Static address `a.b.c.d/prefix` (required when `network.mode = "static"`).
    pub address: Option<String>,
    /// Roles; empty means every role the cluster needs.
    #[serde(default)]
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Block device for the Ceph OSD, e.g. `/dev/sda`. Unset: no OSD on this node.
    pub osd_device: Option<String>,
    /// Allow wiping a device that already holds a filesystem or partition table.
    #[serde(default)]
    pub wipe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// The admin user made on every node (sudo without password, SSH with
    /// the keys below only). Default `homecloud`.
    #[serde(default = "default_admin_user")]
    pub admin_user: String,
    /// Public keys allowed to log in as the admin user. Empty: no SSH login.
    #[serde(default)]
    pub authorized_keys: Vec<String>,
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            admin_user: default_admin_user(),
            authorized_keys: Vec::new(),
        }
    }
}

fn default_admin_user() -> String {
    "homecloud".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Wifi {
    pub ssid: String,
    /// WPA2 passphrase, 8 to 63 characters.
    pub psk: String,
    /// ISO 3166 country code for the regulatory domain, e.g. `DE`.
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Service {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Host name under `cluster.domain`; defaults to the service name.
    pub subdomain: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Where encrypted backups go, e.g. `sftp://user@nas/backups` or `/mnt/usb/backups`.
    pub target: String,
    /// Cron-like schedule in systemd OnCalendar syntax.
    #[serde(default = "default_schedule")]
    pub schedule: String,
}

fn default_schedule() -> String {
    "daily".to_string()
}

/// Services the project knows how to deploy.
pub const KNOWN_SERVICES: &[&str] = &[
    "nextcloud",
    "calibre-web",
    "syncthing",
    "samba",
    "portainer",
    "telegraf",
    "influxdb",
    "chronograf",
    "kapacitor",
    "traefik",
];

/// A problem with `homecloud.toml`, located by file and key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {problem} (fix: {fix})")]
pub struct ConfigError {
    pub file: String,
    /// Dotted key path, e.g. `nodes[1].mac`; `(file)` for whole-file problems.
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl HomecloudConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            problem: format!("cannot read it: {e}"),
            fix: "check the path and that it is UTF-8 text".into(),
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates `text`; `file` is only used in messages.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let err = |key: String, problem: String, fix: &str| ConfigError {
            file: file.to_string(),
            key,
            problem,
            fix: fix.to_string(),
        };
        // Check the version first so a future file fails on `schema`, not on a new key.
        let raw: toml::Table = toml::from_str(text).map_err(|e| {
            err(
                "(file)".into(),
                format!("not valid TOML: {}", one_line(&e.to_string())),
                "correct the TOML syntax at the position shown",
            )
        })?;
        match raw.get("schema") {
            Some(toml::Value::Integer(n)) if *n == i64::from(SCHEMA) => {}
            Some(v) => {
                return Err(err(
                    "schema".into(),
                    format!("unsupported schema {v}"),
                    "set `schema = 1`, the version this hc-image reads",
                ))
            }
            None => {
                return Err(err(
                    "schema".into(),
                    "missing".into(),
                    "add `schema = 1` at the top of the file",
                ))
            }
        }
        let de = toml::Deserializer::new(text);
        let cfg: HomecloudConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = match e.path().to_string() {
                p if p == "." => "(top level)".to_string(),
                p => p,
            };
            let inner = match e.inner().span() {
                Some(span) => format!(
                    "line {}: {}",
                    text[..span.start.min(text.len())].matches('\n').count() + 1,
                    one_line(e.inner().message())
                ),
                None => one_line(e.inner().message()),
            };
            let fix = if inner.contains("unknown field") {
                "remove the key or correct its spelling; `hc-image config schema` lists every key"
            } else if inner.contains("missing field") {
                "add the missing key; examples/homecloud.toml documents every key"
            } else {
                "give the key a value of the type shown in examples/homecloud.toml"
            };
            err(key, inner, fix)
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, problem: String, fix: &str| {
            Err(ConfigError {
                file: file.to_string(),
                key,
                problem,
                fix: fix.to_string(),
            })
        };
        if !is_dns_label(&self.cluster.name) {
            return err(
                "cluster.name".into(),
                format!("{:?} is not a DNS label", self.cluster.name),
                "use 1-63 lowercase letters, digits and '-', not starting or ending with '-'",
            );
        }
        if self.cluster.domain.is_empty()
            || self.cluster.domain.len() > 253
            || !self.cluster.domain.split('.').all(is_dns_label)
        {
            return err(
                "cluster.domain".into(),
                format!("{:?} is not a domain name", self.cluster.domain),
                "use dot-separated DNS labels such as home.arpa",
            );
        }
        if let Some(vip) = &self.network.vip {
            if parse_cidr(vip).is_none() {
                return err(
                    "network.vip".into(),
                    format!("{vip:?} is not an IPv4 address with prefix"),
                    "write it as a.b.c.d/prefix, e.g. 192.168.1.50/24",
                );
            }
        }
        if let Some(gw) = &self.network.gateway {
            if gw.parse::<Ipv4Addr>().is_err() {
                return err(
                    "network.gateway".into(),
                    format!("{gw:?} is not an IPv4 address"),
                    "write it as a.b.c.d",
                );
            }
        }
        for (i, d) in self.network.dns.iter().enumerate() {
            if d.parse::<std::net::IpAddr>().is_err() {
                return err(
                    format!("network.dns[{i}]"),
                    format!("{d:?} is not an IP address"),
                    "list DNS servers as addresses, e.g. \"192.168.1.1\"",
                );
            }
        }
        if self.network.mode == AddressMode::Static && self.network.gateway.is_none() {
            return err(
                "network.gateway".into(),
                "missing while network.mode is \"static\"".into(),
                "add the router's address, or set network.mode = \"dhcp\"",
            );
        }
        // Static-only keys in DHCP mode would be accepted and ignored.
        if self.network.mode == AddressMode::Dhcp {
            let stray = if self.network.gateway.is_some() {
                Some("network.gateway".to_string())
            } else if !self.network.dns.is_empty() {
                Some("network.dns".to_string())
            } else {
                self.nodes
                    .iter()
                    .position(|n| n.address.is_some())
                    .map(|i| format!("nodes[{i}].address"))
            };
            if let Some(key) = stray {
                return err(
                    key,
                    "is used only with network.mode = \"static\" (the router's DHCP server gives them otherwise)".into(),
                    "set network.mode = \"static\" under [network], or remove the key",
                );
            }
        }
        let mut names = BTreeMap::new();
        let mut macs = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !is_dns_label(&n.name) {
                return err(
                    format!("nodes[{i}].name"),
                    format!("{:?} is not a valid hostname", n.name),
                    "use 1-63 lowercase letters, digits and '-'",
                );
            }
            if let Some(j) = names.insert(n.name.clone(), i) {
                return err(
                    format!("nodes[{i}].name"),
                    format!("{:?} is also the name of nodes[{j}]", n.name),
                    "give every node its own name",
                );
            }
            let Some(mac) = normalize_mac(&n.mac) else {
                return err(
                    format!("nodes[{i}].mac"),
                    format!("{:?} is not a MAC address", n.mac),
                    "write six hex pairs separated by ':', e.g. 52:54:00:12:34:56",
                );
            };
            if let Some(j) = macs.insert(mac, i) {
                return err(
                    format!("nodes[{i}].mac"),
                    format!("{:?} is also the MAC of nodes[{j}]", n.mac),
                    "each node needs the MAC of its own network interface",
                );
            }
            match (&n.address, self.network.mode) {
                (Some(a), _) if parse_cidr(a).is_none() => {
                    return err(
                        format!("nodes[{i}].address"),
                        format!("{a:?} is not an IPv4 address with prefix"),
                        "write it as a.b.c.d/prefix, e.g. 192.168.1.51/24",
                    )
                }
                (None, AddressMode::Static) => {
                    return err(
                        format!("nodes[{i}].address"),
                        "missing while network.mode is \"static\"".into(),
                        "give the node an address, or set network.mode = \"dhcp\"",
                    )
                }
                _ => {}
            }
            if let (Some(a), Some(gw)) = (&n.address, &self.network.gateway) {
                if let Some(why) = bad_static(a, gw) {
                    return err(
                        format!("nodes[{i}].address"),
                        format!("{a:?} {why}"),
                        "give the node an address in the router's subnet, with that subnet's prefix (e.g. 192.168.1.51/24 for gateway 192.168.1.1)",
                    );
                }
            }
            if let Some(a) = &n.address {
                let ip = a.split('/').next().unwrap_or_default();
                if let Some(j) = self.nodes[..i].iter().position(|o| {
                    o.address.as_deref().and_then(|x| x.split('/').next()) == Some(ip)
                }) {
                    return err(
                        format!("nodes[{i}].address"),
                        format!("{ip} is also the address of nodes[{j}]"),
                        "give every node its own address",
                    );
                }
                if self
                    .network
                    .vip
                    .as_deref()
                    .and_then(|v| v.split('/').next())
                    == Some(ip)
                {
                    return err(
                        format!("nodes[{i}].address"),
                        format!("{ip} is the cluster's network.vip"),
                        "the virtual IP moves between nodes: give the node another address",
                    );
                }
            }
            if n.roles.contains(&Role::Manager) && n.roles.contains(&Role::Worker) {
                return err(
                    format!("nodes[{i}].roles"),
                    "both \"manager\" and \"worker\"".into(),
                    "keep one of the two",
                );
            }
        }
        if let Some(dev) = &self.storage.osd_device {
            if !dev.starts_with("/dev/") {
                return err(
                    "storage.osd_device".into(),
                    format!("{dev:?} is not a device path"),
                    "name a whole disk such as /dev/sda or /dev/disk/by-id/...",
                );
            }
        }
        if let Some(why) = bad_zone(&self.cluster.timezone) {
            return err(
                "cluster.timezone".into(),
                format!("{:?} {why}", self.cluster.timezone),
                "use an IANA zone name such as Europe/Berlin or Etc/UTC (see `timedatectl list-timezones`)",
            );
        }
        if let Some(why) = bad_user_name(&self.ssh.admin_user) {
            return err(
                "ssh.admin_user".into(),
                format!("{:?} {why}", self.ssh.admin_user),
                "use a new lowercase name such as \"homecloud\" (letters, digits, '-', '_')",
            );
        }
        for (i, k) in self.ssh.authorized_keys.iter().enumerate() {
            if let Err((problem, fix)) = crate::config::sshkey::check(k) {
                return err(format!("ssh.authorized_keys[{i}]"), problem, fix);
            }
        }
        if let Some(w) = &self.wifi {
            if w.ssid.is_empty() || w.ssid.len() > 32 {
                return err(
                    "wifi.ssid".into(),
                    "must be 1 to 32 bytes".into(),
                    "use your network's name",
                );
            }
            if !(8..=63).contains(&w.psk.len()) {
                return err(
                    "wifi.psk".into(),
                    format!("has {} characters, WPA2 needs 8 to 63", w.psk.len()),
                    "use the network's passphrase",
                );
            }
            if !w.psk.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
                return err(
                    "wifi.psk".into(),
                    "holds a character WPA does not allow in a passphrase".into(),
                    "use printable ASCII (letters, digits, spaces, punctuation), as the router does",
                );
            }
            if w.country.len() != 2 || !w.country.bytes().all(|b| b.is_ascii_uppercase()) {
                return err(
                    "wifi.country".into(),
                    format!("{:?} is not an ISO 3166 country code", w.country),
                    "use two capital letters, e.g. DE",
                );
            }
        }
        for (name, svc) in &self.services {
            if !KNOWN_SERVICES.contains(&name.as_str()) {
                return err(
                    format!("services.{name}"),
                    "unknown service".into(),
                    &format!("use one of: {}", KNOWN_SERVICES.join(", ")),
                );
            }
            if let Some(sub) = &svc.subdomain {
                if !is_dns_label(sub) {
                    return err(
                        format!("services.{name}.subdomain"),
                        format!("{sub:?} is not a DNS label"),
                        "use lowercase letters, digits and '-'",
                    );
                }
            }
        }
        if let Some(b) = &self.backup {
            if b.target.is_empty() {
                return err(
                    "backup.target".into(),
                    "is empty".into(),
                    "name a path or sftp:// URL, or remove the [backup] table",
                );
            }
        }
        match self.not_applied_yet() {
            Some((key, what)) => err(
                key,
                format!("{what} is not applied on the device yet, so this hc-image refuses it"),
                "remove it; the README's \"Not yet implemented\" lists what is coming",
            ),
            None => Ok(()),
        }
    }

    /// The first key whose feature the device does not have yet: refused,
    /// never accepted and ignored. Checked after the shape of every value,
    /// so a typo is still reported as a typo.
    fn not_applied_yet(&self) -> Option<(String, &'static str)> {
        if let Some(name) = self.services.keys().next() {
            return Some((format!("services.{name}"), "a service"));
        }
        if self.backup.is_some() {
            return Some(("backup".into(), "a backup"));
        }
        None
    }

    /// The node entry for a MAC address, compared case-insensitively.
    /// Swarm node labels for the node called `name`: `homecloud.role.<r>=true`
    /// for each role it is given, storage and ingress when it names none (or
    /// is not listed). Manager or worker shows in the node's swarm role.
    pub fn role_labels(&self, name: &str) -> Vec<(String, String)> {
        let roles = self
            .nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.roles.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| vec![Role::Storage, Role::Ingress]);
        roles
            .iter()
            .filter(|r| matches!(r, Role::Storage | Role::Ingress))
            .map(|r| (format!("homecloud.role.{}", r.as_str()), "true".to_string()))
            .collect()
    }

    pub fn node_by_mac(&self, mac: &str) -> Option<&Node> {
        let want = normalize_mac(mac)?;
        self.nodes
            .iter()
            .find(|n| normalize_mac(&n.mac).as_deref() == Some(want.as_str()))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// RFC 1123 label, lowercase only (hostnames are compared as typed).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `aa:bb:cc:dd:ee:ff` in lowercase, accepting ':' or '-' separators.
pub fn normalize_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

/// `a.b.c.d/prefix` with prefix 0..=32.
/// Why a node's static `address` cannot work with `gateway`: the router
/// must be on the node's own subnet, and the address must be a host there.
pub fn bad_static(address: &str, gateway: &str) -> Option<String> {
    let (a, p) = parse_cidr(address)?;
    let gw: Ipv4Addr = gateway.parse().ok()?;
    if !(8..=30).contains(&p) {
        return Some(format!(
            "has prefix /{p}; a home LAN uses /8 to /30, usually /24"
        ));
    }
    let mask = u32::MAX << (32 - u32::from(p));
    let net = u32::from(a) & mask;
    if u32::from(gw) & mask != net {
        return Some(format!(
            "is not on the gateway {gw}'s subnet ({}/{p})",
            Ipv4Addr::from(net)
        ));
    }
    let host = u32::from(a) & !mask;
    if host == 0 || host == !mask {
        return Some("is the subnet's network or broadcast address".into());
    }
    if a == gw {
        return Some("is the gateway's own address".into());
    }
    None
}

/// The DNS servers a static node uses: `network.dns`, else the gateway.
pub fn static_dns(net: &Network) -> Vec<String> {
    if net.dns.is_empty() {
        net.gateway.iter().cloned().collect()
    } else {
        net.dns.clone()
    }
}

pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    let p: u8 = p.parse().ok()?;
    (p <= 32).then_some(())?;
    Some((a.parse().ok()?, p))
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
            Role::Storage => "storage",
            Role::Ingress => "ingress",
        })
    }
}

#[cfg(test)]
mod tests;

/// Why `zone` is not a time zone this node can apply, if it is not. The
/// zone database is checked where there is one (the build host, the device).
pub fn bad_zone(zone: &str) -> Option<&'static str> {
    let shape = !zone.is_empty()
        && zone.len() <= 64
        && !zone.starts_with('/')
        && zone
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
    if !shape {
        return Some("is not a time zone name");
    }
    let db = Path::new(ZONEINFO);
    if db.is_dir() && !db.join(zone).is_file() {
        return Some("is not in the time zone database");
    }
    None
}

/// The zone database of Debian's tzdata.
pub const ZONEINFO: &str = "/usr/share/zoneinfo";

/// Accounts of the base system the admin user must not take over.
const SYSTEM_USERS: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "nobody",
    "sshd",
    "messagebus",
    "ceph",
    "dnsmasq",
    "keepalived_script",
    "docker",
    "sudo",
    "admin",
    "adm",
    "staff",
    "users",
];

/// Why `name` cannot be the admin user's, if it cannot.
pub fn bad_user_name(name: &str) -> Option<&'static str> {
    let mut b = name.bytes();
    let first = b.next();
    let shape = matches!(first, Some(c) if c.is_ascii_lowercase() || c == b'_')
        && name.len() <= 32
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
    if !shape {
        return Some("is not a user name");
    }
    if SYSTEM_USERS.contains(&name) || name.starts_with("systemd-") || name.starts_with('_') {
        return Some("is a system account");
    }
    None
}
