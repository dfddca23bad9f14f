// SPDX-License-Identifier: Apache-2.0
//! This node's OSD: bluestore on the whole data disk, made once, never on a
//! disk that holds data unless the user said `wipe = true`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cmd::{chown_ceph, enable_now, mon_in, mon_json};
use super::material::{gen_key, keyring, uuid, write_secret, Material, OSD_IDENTITY};
use crate::config::Role;
use crate::engine::{failpoint, ids, journal, Ctx, Result};
use crate::host::files::{read_json, write_atomic, PUBLIC};
use crate::host::node::current_hostname;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsdEntry {
    pub id: u64,
    pub uuid: String,
    pub up: bool,
}

pub fn parse_osd_dump(v: &serde_json::Value) -> Vec<OsdEntry> {
    v["osds"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| OsdEntry {
                    id: o["osd"].as_u64().unwrap_or(u64::MAX),
                    uuid: o["uuid"].as_str().unwrap_or_default().to_string(),
                    up: o["up"].as_u64() == Some(1),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What this node's data disk holds, as `wipefs` sees it: empty if nothing.
pub fn signatures(wipefs: &str) -> Vec<String> {
    let mut v: Vec<String> = wipefs
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.dedup();
    v
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Osd {
    Up(u64),
    /// Not made, and why (shown by `hc status`).
    None(String),
}

pub(super) fn storage_node(cx: &Ctx) -> bool {
    let name = current_hostname(&cx.root);
    cx.config
        .nodes
        .iter()
        .find(|n| n.name == name)
        .is_none_or(|n| n.roles.is_empty() || n.roles.contains(&Role::Storage))
}

/// Mount points on `dev` and its partitions, from `lsblk -n -o MOUNTPOINT`.
pub fn mountpoints(lsblk: &str) -> Vec<String> {
    lsblk
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Signatures on `dev` (`wipefs --no-act`): nothing is written.
pub(super) fn disk_signatures(cx: &Ctx, dev: &str) -> Result<Vec<String>> {
    Ok(signatures(&cx.runner.run(&[
        "wipefs",
        "--no-act",
        "--noheadings",
        "--output",
        "TYPE",
        dev,
    ])?))
}

/// The bluestore label on `dev` (`ceph-bluestore-tool show-label`):
/// (osd uuid, cluster fsid), if it has one.
pub fn bluestore_label(show_label: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(show_label).ok()?;
    let l = v.as_object()?.values().next()?;
    Some((
        l["osd_uuid"].as_str()?.to_string(),
        l["ceph_fsid"].as_str()?.to_string(),
    ))
}

/// Refusals are decided before anything is written to the disk; `sigs`
/// is what the disk holds.
pub(super) fn refusal(
    cx: &Ctx,
    dev: &str,
    sigs: &[String],
    m: &Material,
    uuid: &str,
) -> Result<Option<String>> {
    // The system disk (or any disk in use) never, whatever `wipe` says:
    // on a PC, /dev/sda is usually the boot disk.
    let mounts = mountpoints(&cx.runner.run(&["lsblk", "-n", "-o", "MOUNTPOINT", dev])?);
    if !mounts.is_empty() {
        return Ok(Some(format!(
            "refused: {dev} (storage.osd_device in homecloud.toml) holds mounted filesystems ({}); it is never used for an OSD, even with storage.wipe = true. Name the data disk",
            mounts.join(", ")
        )));
    }
    if sigs.is_empty() {
        return Ok(None);
    }
    // Our own OSD, left half-made by a cut: ours to redo.
    let ours = cx
        .runner
        .run(&["ceph-bluestore-tool", "show-label", "--dev", dev])
        .ok()
        .and_then(|o| bluestore_label(&o))
        .is_some_and(|(osd, fsid)| osd == uuid && fsid == m.fsid);
    if ours || cx.config.storage.wipe {
        return Ok(None);
    }
    Ok(Some(format!(
        "refused: {dev} holds {} (storage.osd_device in homecloud.toml); nothing was written to it. Set storage.wipe = true to let hc-firstboot erase it, or name an empty disk",
        sigs.join(", ")
    )))
}

pub(super) fn osd_entries(cx: &Ctx) -> Result<Vec<OsdEntry>> {
    Ok(parse_osd_dump(&mon_json(
        cx,
        json!({"prefix": "osd dump"}),
    )?))
}

pub(super) fn wait_osd_up(cx: &Ctx, uuid: &str, limit: Duration) -> Result<u64> {
    let t = Instant::now();
    loop {
        if let Ok(list) = osd_entries(cx) {
            if let Some(o) = list.iter().find(|o| o.uuid == uuid && o.up) {
                return Ok(o.id);
            }
        }
        if t.elapsed() > limit {
            return Err(format!(
                "the OSD (uuid {uuid}) did not come up in {limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct OsdIdentity {
    uuid: String,
    key: String,
}

pub(super) fn osd_identity(cx: &Ctx) -> Result<OsdIdentity> {
    let p = cx.path(OSD_IDENTITY);
    let have: OsdIdentity = read_json(&p);
    if have.uuid.len() == 36 && !have.key.is_empty() {
        return Ok(have);
    }
    let me = OsdIdentity {
        uuid: uuid()?,
        key: gen_key(cx)?,
    };
    let text = serde_json::to_vec(&me).map_err(|e| format!("encoding {OSD_IDENTITY}: {e}"))?;
    write_secret(&p, &text)?;
    Ok(me)
}

pub(super) fn osd_dir(id: u64) -> String {
    format!("/var/lib/ceph/osd/ceph-{id}")
}

/// Written into the OSD directory once `ceph-osd --mkfs` has finished.
pub(super) const OSD_MADE: &str = "hc-made";

/// Starts the OSD's unit now and at every boot. The image's drop-in
/// `ceph-osd@.service.d/hc-device.conf` hands the data disk (the `block`
/// link) to `ceph` at every start: device nodes are made afresh, owned by
/// root. No drop-in is written here, so no systemd reload is needed.
pub(super) fn osd_unit(cx: &Ctx, id: u64) -> Result<()> {
    enable_now(cx, "osd", &id.to_string())
}

/// Makes the OSD `id` on `dev` (bluestore on the whole disk, no LVM):
/// keyring, `block` link, `ceph-osd --mkfs`, then the marker.
pub(super) fn mkfs_osd(cx: &Ctx, id: u64, me: &OsdIdentity, dev: &str) -> Result<()> {
    let dir = osd_dir(id);
    let full = cx.path(&dir);
    // A half-made directory (cut during mkfs) is made again.
    let _ = std::fs::remove_dir_all(&full);
    std::fs::create_dir_all(&full).map_err(|e| format!("creating {dir}: {e}"))?;
    write_secret(
        &full.join("keyring"),
        keyring(&format!("osd.{id}"), &me.key, &[]).as_bytes(),
    )?;
    std::os::unix::fs::symlink(dev, full.join("block"))
        .map_err(|e| format!("linking {dir}/block to {dev}: {e}"))?;
    chown_ceph(cx, &dir)?;
    cx.runner.run(&["chown", "ceph:ceph", dev])?;
    let id_s = id.to_string();
    cx.runner.run(&[
        "ceph-osd",
        "--cluster",
        "ceph",
        "-i",
        &id_s,
        "--mkfs",
        "--osd-objectstore",
        "bluestore",
        "--osd-uuid",
        &me.uuid,
        "--osd-data",
        &full.display().to_string(),
        "--setuser",
        "ceph",
        "--setgroup",
        "ceph",
    ])?;
    let made = full.join(OSD_MADE);
    write_atomic(&made, b"", PUBLIC)
}

/// This node's OSD on `storage.osd_device`: made once, found again after
/// a power cut (same uuid and key, so the same id), never on a disk that
/// holds data unless `storage.wipe` says so.
pub fn ensure_osd(cx: &Ctx, m: &Material) -> Result<Osd> {
    let Some(dev) = cx.config.storage.osd_device.clone() else {
        return Ok(Osd::None("none: storage.osd_device is not set".into()));
    };
    if !storage_node(cx) {
        return Ok(Osd::None(
            "none: this node's roles leave out storage".into(),
        ));
    }
    if !cx.path(&dev).exists() {
        return Ok(Osd::None(format!(
            "none: {dev} (storage.osd_device) does not exist on this node; plug the disk in, then run `hc-firstboot run`"
        )));
    }
    let me = osd_identity(cx)?;
    let list = osd_entries(cx)?;
    if let Some(o) = list.iter().find(|o| o.uuid == me.uuid) {
        if o.up {
            return Ok(Osd::Up(o.id));
        }
        if cx.path(&osd_dir(o.id)).join(OSD_MADE).is_file() {
            // Made to the end before: only ever started again.
            osd_unit(cx, o.id)?;
            return wait_osd_up(cx, &me.uuid, Duration::from_secs(900)).map(Osd::Up);
        }
    }
    let sigs = disk_signatures(cx, &dev)?;
    if let Some(why) = refusal(cx, &dev, &sigs, m, &me.uuid)? {
        return Ok(Osd::None(why));
    }
    if !sigs.is_empty() {
        // wipe = true, or our own half-made OSD.
        cx.runner.run(&["wipefs", "--all", "--force", &dev])?;
        cx.runner.run(&[
            "dd",
            "if=/dev/zero",
            &format!("of={dev}"),
            "bs=1M",
            "count=10",
            "conv=fsync",
        ])?;
    }
    failpoint("ceph:before-osd");
    let secret = json!({"cephx_secret": me.key}).to_string();
    let out = mon_in(
        cx,
        &json!({"prefix": "osd new", "uuid": me.uuid, "format": "json"}),
        secret.as_bytes(),
    )?;
    let id = serde_json::from_slice::<Value>(&out)
        .ok()
        .and_then(|v| v["osdid"].as_u64())
        .ok_or_else(|| {
            format!(
                "ceph osd new: unexpected output {}",
                String::from_utf8_lossy(&out)
            )
        })?;
    mkfs_osd(cx, id, &me, &dev)?;
    failpoint("ceph:after-osd");
    osd_unit(cx, id)?;
    let id = wait_osd_up(cx, &me.uuid, Duration::from_secs(900))?;
    journal(
        ids::CEPH_OSD,
        5,
        &format!("ceph: osd.{id} up on {dev}"),
        &[],
    );
    Ok(Osd::Up(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osd_dump_and_wipefs_output_parse() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"osds":[{"osd":0,"uuid":"u0","up":1,"in":1,"up_from":7},{"osd":1,"uuid":"u1","up":0,"in":1,"up_from":0}]}"#,
        )
        .expect("json");
        let o = parse_osd_dump(&v);
        assert_eq!(
            o,
            vec![
                OsdEntry {
                    id: 0,
                    uuid: "u0".into(),
                    up: true,
                },
                OsdEntry {
                    id: 1,
                    uuid: "u1".into(),
                    up: false,
                },
            ]
        );
        assert_eq!(mountpoints("\n/boot/efi\n/\n"), ["/boot/efi", "/"]);
        assert!(mountpoints("\n\n").is_empty());
        assert!(signatures("\n").is_empty());
        assert_eq!(signatures("ext4\n"), ["ext4"]);
        assert_eq!(signatures("dos\ndos\n"), ["dos"]);
    }

    #[test]
    fn a_bluestore_label_names_its_osd_and_cluster() {
        let label = r#"{
    "/dev/vdb": {
        "osd_uuid": "0f1e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b",
        "size": 8589934592,
        "ceph_fsid": "11111111-2222-4333-8444-555555555555",
        "kv_backend": "rocksdb",
        "magic": "ceph osd volume v026",
        "whoami": "2"
    }
}"#;
        assert_eq!(
            bluestore_label(label),
            Some((
                "0f1e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b".into(),
                "11111111-2222-4333-8444-555555555555".into()
            ))
        );
        assert_eq!(bluestore_label(""), None);
        assert_eq!(bluestore_label("{}"), None);
    }
}
