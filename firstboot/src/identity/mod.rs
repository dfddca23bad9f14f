// SPDX-License-Identifier: Apache-2.0
//! The identity step (device, first boot): hostname from homecloud.toml by
//! the LAN interface's MAC (else derived from the MAC), SSH host keys made
//! here, and the root partition and filesystem grown to the disk's end. The
//! machine-id is systemd's: the image ships it uninitialized.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::PathBuf;

pub mod grow;

use crate::engine::{failpoint, Ctx, Observed, Result, Step};
use crate::host::files::{read_trimmed as read, write_atomic, PUBLIC};
use crate::host::net::lan_interface;

pub struct Identity;

/// Where a name assigned by the cluster (node not listed) is kept.
pub const ASSIGNED_NAME: &str = "/var/lib/hc-firstboot/assigned-name";

pub fn desired_hostname(cx: &Ctx, mac: &str) -> String {
    match cx.config.node_by_mac(mac) {
        Some(n) => n.name.clone(),
        None => read(&cx.path(ASSIGNED_NAME))
            .filter(|n| !n.is_empty())
            .or_else(|| mac_name(mac))
            .unwrap_or_else(|| "homecloud".into()),
    }
}

/// The name of a node `homecloud.toml` does not list: `hc-` and the last
/// three octets of its MAC, the same on the founder and on every joiner.
/// `None` unless `mac` is six hex octets joined by colons (it may come from
/// the join channel).
pub fn mac_name(mac: &str) -> Option<String> {
    let octets: Vec<&str> = mac.split(':').collect();
    let ok = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| format!("hc-{}", octets[3..].concat().to_ascii_lowercase()))
}

struct RootDev {
    part_dev: String,
    disk_dev: String,
    part: u32,
    disk_size: u64,
}

fn root_device(cx: &Ctx) -> Result<RootDev> {
    let mi = read(&cx.path("/proc/self/mountinfo")).ok_or("cannot read mountinfo")?;
    let source = mi
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (pre.split_whitespace().nth(4)? == "/")
                .then(|| post.split_whitespace().nth(1).map(str::to_string))?
        })
        .ok_or("no root mount in mountinfo")?;
    let name = source.trim_start_matches("/dev/").to_string();
    let sys = cx.path(&format!("/sys/class/block/{name}"));
    let part: u32 = read(&sys.join("partition"))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("{source} is not a partition"))?;
    let link = std::fs::read_link(&sys).map_err(|e| format!("resolving {}: {e}", sys.display()))?;
    let disk = link
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or("cannot find the disk of the root partition")?;
    let sectors: u64 = read(&cx.path(&format!("/sys/class/block/{disk}/size")))
        .and_then(|s| s.parse().ok())
        .ok_or("cannot read the disk size")?;
    Ok(RootDev {
        part_dev: format!("/dev/{name}"),
        disk_dev: format!("/dev/{disk}"),
        part,
        disk_size: sectors * 512,
    })
}

fn fs_bytes(cx: &Ctx, dev: &str) -> Result<u64> {
    let out = cx.runner.run(&["dumpe2fs", "-h", dev])?;
    let field = |k: &str| -> Option<u64> {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
    };
    match (field("Block count:"), field("Block size:")) {
        (Some(c), Some(s)) => Ok(c * s),
        _ => Err(format!("dumpe2fs -h {dev}: no block count")),
    }
}

fn disk_path(cx: &Ctx, dev: &str) -> PathBuf {
    cx.path(dev)
}

impl Identity {
    fn grow_state(&self, cx: &Ctx) -> Result<(RootDev, Option<grow::Grow>, u64, u64)> {
        let rd = root_device(cx)?;
        let mut disk = std::fs::File::open(disk_path(cx, &rd.disk_dev))
            .map_err(|e| format!("opening {}: {e}", rd.disk_dev))?;
        let g = grow::plan(&mut disk, rd.disk_size, rd.part)
            .map_err(|e| format!("reading the partition table of {}: {e}", rd.disk_dev))?;
        let (_, part_len) = grow::extent(&mut disk, rd.part)
            .map_err(|e| format!("reading the partition table of {}: {e}", rd.disk_dev))?;
        let fs = fs_bytes(cx, &rd.part_dev)?;
        Ok((rd, g, part_len, fs))
    }
}

/// The host keys sshd offers (`/etc/ssh/sshd_config.d/hc-image.conf`), the
/// one checked for first. No RSA: its key generation took seconds of a
/// board's CPU and every current client speaks Ed25519.
const HOST_KEYS: [(&str, &str); 2] = [
    ("ed25519", "/etc/ssh/ssh_host_ed25519_key"),
    ("ecdsa", "/etc/ssh/ssh_host_ecdsa_key"),
];

fn host_keys_made(cx: &Ctx) -> bool {
    HOST_KEYS.iter().all(|(_, k)| cx.path(k).is_file())
}

impl Step for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        let (iface, mac) = lan_interface(&cx.root)?;
        let want = desired_hostname(cx, &mac);
        let host_ok = read(&cx.path("/etc/hostname")).as_deref() == Some(want.as_str());
        let keys_ok = host_keys_made(cx);
        let (rd, g, part_len, fs) = self.grow_state(cx)?;
        // Within 1 MiB: resize2fs rounds to whole blocks.
        let grown = g.is_none() && fs + (1 << 20) >= part_len;
        if host_ok && keys_ok && grown {
            let mut facts = BTreeMap::new();
            facts.insert("hostname".into(), want);
            facts.insert("interface".into(), format!("{iface} {mac}"));
            facts.insert(
                "machine-id".into(),
                read(&cx.path("/etc/machine-id")).unwrap_or_default(),
            );
            facts.insert(
                "root".into(),
                format!(
                    "{} {} bytes on {} of {} bytes",
                    rd.part_dev, fs, rd.disk_dev, rd.disk_size
                ),
            );
            return Ok(Observed::Done(facts));
        }
        Ok(Observed::Pending)
    }

    fn apply(&self, cx: &Ctx) -> Result<()> {
        let (_, mac) = lan_interface(&cx.root)?;
        let want = desired_hostname(cx, &mac);
        if read(&cx.path("/etc/hostname")).as_deref() != Some(want.as_str()) {
            write_atomic(
                &cx.path("/etc/hostname"),
                format!("{want}\n").as_bytes(),
                PUBLIC,
            )?;
            let hosts = read(&cx.path("/etc/hosts")).unwrap_or_default();
            let mut lines: Vec<String> = hosts
                .lines()
                .filter(|l| !l.starts_with("127.0.1.1"))
                .map(str::to_string)
                .collect();
            lines.push(format!("127.0.1.1\t{want}"));
            write_atomic(
                &cx.path("/etc/hosts"),
                format!("{}\n", lines.join("\n")).as_bytes(),
                PUBLIC,
            )?;
            // The running kernel's name; /etc/hostname covers the next boot.
            std::fs::write(cx.path("/proc/sys/kernel/hostname"), want.as_bytes())
                .map_err(|e| format!("setting the hostname: {e}"))?;
            failpoint("identity:after-hostname");
        }
        if !host_keys_made(cx) {
            for (t, k) in HOST_KEYS {
                let p = cx.path(k);
                if p.is_file() && p.with_extension("pub").is_file() {
                    continue;
                }
                // Made under a temporary name and renamed (the public half
                // first): a power cut never leaves half a key under the real
                // name, and ssh-keygen never meets a file it would ask about.
                let tmp = p.with_extension("hc-tmp");
                let tmp_pub = p.with_extension("hc-tmp.pub");
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_file(&tmp_pub);
                let f = tmp.to_string_lossy().into_owned();
                cx.runner
                    .run(&["ssh-keygen", "-q", "-t", t, "-N", "", "-C", "", "-f", &f])?;
                std::fs::rename(&tmp_pub, p.with_extension("pub"))
                    .and_then(|_| std::fs::rename(&tmp, &p))
                    .map_err(|e| format!("installing {k}: {e}"))?;
            }
            failpoint("identity:after-ssh-keys");
        }
        let (rd, g, _, _) = self.grow_state(cx)?;
        if let Some(g) = g {
            let mut disk = OpenOptions::new()
                .read(true)
                .write(true)
                .open(disk_path(cx, &rd.disk_dev))
                .map_err(|e| format!("opening {}: {e}", rd.disk_dev))?;
            grow::apply(&mut disk, &g).map_err(|e| format!("growing partition {}: {e}", g.part))?;
            disk.sync_all()
                .map_err(|e| format!("syncing {}: {e}", rd.disk_dev))?;
            failpoint("identity:after-table");
        }
        // Tell the kernel (idempotent), then grow the mounted filesystem.
        let nr = rd.part.to_string();
        cx.runner.run(&["partx", "-u", "--nr", &nr, &rd.disk_dev])?;
        cx.runner.run(&["resize2fs", &rd.part_dev])?;
        Ok(())
    }
}
