// SPDX-License-Identifier: Apache-2.0
//! Pools and CephFS: creation with monitor commands, sizes that follow the
//! OSD count, and the mount unit of /mnt/cephfs.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::cmd::{mon, mon_json};
use super::material::{write_secret, CLIENT, DATA_POOL, FS, META_POOL, MOUNT_POINT, SECRET_FILE};
use crate::engine::{Ctx, Result};

pub(super) fn fs_set(cx: &Ctx, var: &str, val: &str) -> Result<()> {
    mon(
        cx,
        json!({"prefix": "fs set", "fs_name": FS, "var": var, "val": val}),
    )
    .map(|_| ())
}

pub(super) fn pools(cx: &Ctx) -> Result<Vec<(String, u64, u64)>> {
    let v = mon_json(cx, json!({"prefix": "osd pool ls", "detail": "detail"}))?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["pool_name"].as_str().unwrap_or_default().to_string(),
                        p["size"].as_u64().unwrap_or(0),
                        p["min_size"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

pub(super) fn ensure_fs(cx: &Ctx) -> Result<()> {
    let have: Vec<String> = pools(cx)?.into_iter().map(|p| p.0).collect();
    for (pool, pgs) in [(META_POOL, 16), (DATA_POOL, 32)] {
        if !have.iter().any(|p| p == pool) {
            mon(
                cx,
                json!({"prefix": "osd pool create", "pool": pool, "pg_num": pgs, "pgp_num": pgs}),
            )?;
        }
    }
    let fs = mon_json(cx, json!({"prefix": "fs ls"}))?;
    let exists = fs
        .as_array()
        .is_some_and(|a| a.iter().any(|f| f["name"] == FS));
    if !exists {
        mon(
            cx,
            json!({"prefix": "fs new", "fs_name": FS, "metadata": META_POOL, "data": DATA_POOL}),
        )?;
        fs_set(cx, "standby_count_wanted", "0")?;
    }
    Ok(())
}

/// Pool size and min_size for a cluster with `osds` OSDs (one per node).
pub fn replication(osds: usize) -> (u64, u64) {
    match osds {
        0 | 1 => (1, 1),
        2 => (2, 1),
        _ => (3, 2),
    }
}

/// Raises every pool to the size the OSD count allows; never lowers it (a
/// node that is down still counts: its data comes back with it).
pub(super) fn adjust_pools(cx: &Ctx, osds: usize) -> Result<(u64, u64)> {
    let (size, min) = replication(osds);
    for (pool, have, have_min) in pools(cx)? {
        if have < size {
            mon(
                cx,
                json!({"prefix": "osd pool set", "pool": pool, "var": "size", "val": size.to_string(), "yes_i_really_mean_it": true}),
            )?;
        }
        if have_min != min && have <= size {
            mon(
                cx,
                json!({"prefix": "osd pool set", "pool": pool, "var": "min_size", "val": min.to_string()}),
            )?;
        }
    }
    for (key, v) in [
        ("osd_pool_default_size", size),
        ("osd_pool_default_min_size", min),
    ] {
        mon(
            cx,
            json!({"prefix": "config set", "who": "global", "name": key, "value": v.to_string()}),
        )?;
    }
    Ok((size, min))
}

/// The mount unit ships in the image (`overlays/base`): written here at
/// run time it needed a systemd reload, 12-19 s of an emulated guest's CPU.
#[cfg(test)]
const MOUNT_UNIT_FILE: &str =
    include_str!("../../../overlays/base/usr/lib/systemd/system/mnt-cephfs.mount");

pub fn mounted(root: &Path) -> bool {
    std::fs::read_to_string(root.join("proc/self/mountinfo")).is_ok_and(|t| {
        t.lines()
            .any(|l| l.split(' ').nth(4) == Some(MOUNT_POINT) && l.contains(" - ceph "))
    })
}

/// An MDS serves the filesystem (a mon command: no manager module needed).
pub(super) fn fs_active(cx: &Ctx) -> bool {
    mon_json(cx, json!({"prefix": "fs dump"})).is_ok_and(|v| active_mds(&v))
}

pub fn active_mds(fs_dump: &serde_json::Value) -> bool {
    fs_dump["filesystems"].as_array().is_some_and(|a| {
        a.iter().any(|f| {
            f["mdsmap"]["fs_name"] == FS
                && f["mdsmap"]["info"]
                    .as_object()
                    .is_some_and(|o| o.values().any(|d| d["state"] == "up:active"))
        })
    })
}

/// Client key, secret file, mount unit; mounts when the fs can serve.
pub fn ensure_mount(cx: &Ctx, wait: Duration) -> Result<bool> {
    if !cx.path(SECRET_FILE).is_file() {
        let entity = format!("client.{CLIENT}");
        let _ = mon(
            cx,
            json!({"prefix": "fs authorize", "filesystem": FS, "entity": entity, "caps": ["/", "rw"]}),
        );
        let key = mon(cx, json!({"prefix": "auth get-key", "entity": entity}))?;
        write_secret(
            &cx.path(SECRET_FILE),
            format!("{}\n", String::from_utf8_lossy(&key).trim()).as_bytes(),
        )?;
    }
    std::fs::create_dir_all(cx.path(MOUNT_POINT))
        .map_err(|e| format!("creating {MOUNT_POINT}: {e}"))?;
    let t = Instant::now();
    loop {
        if mounted(&cx.root) {
            return Ok(true);
        }
        if fs_active(cx) {
            let _ = cx
                .runner
                .run(&["systemctl", "reset-failed", "mnt-cephfs.mount"]);
            match cx.runner.run(&["systemctl", "start", "mnt-cephfs.mount"]) {
                Ok(_) if mounted(&cx.root) => return Ok(true),
                Ok(_) => {}
                Err(e) if t.elapsed() > wait => return Err(format!("mounting CephFS: {e}")),
                Err(_) => {}
            }
        }
        if t.elapsed() > wait {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_size_follows_node_count() {
        assert_eq!(replication(0), (1, 1));
        assert_eq!(replication(1), (1, 1));
        assert_eq!(replication(2), (2, 1));
        assert_eq!(replication(3), (3, 2));
        assert_eq!(replication(7), (3, 2));
    }

    #[test]
    fn an_active_mds_is_found_in_fs_dump() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"filesystems":[{"mdsmap":{"fs_name":"homecloud","info":{"gid_4242":{"name":"node1","state":"up:active"}}}}],"standbys":[{"name":"node2"}]}"#,
        )
        .expect("json");
        assert!(active_mds(&v));
        let v: serde_json::Value = serde_json::from_str(
            r#"{"filesystems":[{"mdsmap":{"fs_name":"homecloud","info":{"gid_1":{"state":"up:creating"}}}}]}"#,
        )
        .expect("json");
        assert!(!active_mds(&v));
    }

    #[test]
    fn the_image_mount_unit_matches_the_agent() {
        let u = MOUNT_UNIT_FILE;
        assert!(u.contains(&format!("What={CLIENT}@.{FS}=/\n")));
        assert!(u.contains(&format!("Where={MOUNT_POINT}\n")));
        assert!(u.contains(&format!("secretfile={SECRET_FILE},")));
        assert!(u.contains(&format!("ConditionPathExists={SECRET_FILE}\n")));
    }
}
