// SPDX-License-Identifier: Apache-2.0
//! What the daemon does for Ceph: a monitor for every swarm manager, the
//! mount kept, and the cluster's material handed to joiners.

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cmd::mon_json;
use super::fs::{ensure_mount, mounted};
use super::material::{Material, MOUNT_POINT, SECRET_FILE};
use super::mon::{ensure_mon_node, has_mgr, has_mon, make_mgr, mgr_available};
use super::step::{enabled, TOPIC};
use crate::cluster::duty::{ClusterView, Duty, Schedule};
use crate::cluster::join::{JoinAnswer, JoinRefusal, JoinRequest};
use crate::cluster::peers::MANAGERS;
use crate::engine::Ctx;
use crate::host::node::current_hostname;

/// Ceph calls take seconds (more under emulation): a thread of its own.
pub struct Reconcile;

impl Duty for Reconcile {
    fn name(&self) -> &'static str {
        "ceph"
    }

    fn schedule(&self) -> Schedule {
        Schedule::Every(Duration::from_secs(20))
    }

    fn tick(&self, cx: &Ctx, view: &ClusterView) {
        reconcile(cx, view.manager());
    }
}

/// Members hand joiners the cluster's material.
pub struct Answer;

impl JoinAnswer for Answer {
    fn topic(&self) -> &'static str {
        TOPIC
    }

    fn answer(
        &self,
        cx: &Ctx,
        _view: &ClusterView,
        _req: &JoinRequest,
    ) -> std::result::Result<Value, JoinRefusal> {
        let m = material_for_joiner(cx).ok_or_else(|| JoinRefusal::NotYet {
            reason: "no Ceph cluster here yet".into(),
        })?;
        serde_json::to_value(m).map_err(|e| JoinRefusal::Failed {
            reason: e.to_string(),
        })
    }
}

/// The daemon's duty every little while: a swarm manager without a
/// monitor gets one (the leader promotes two workers at once), and a
/// CephFS that is not mounted (after a reboot) is mounted again.
fn reconcile(cx: &Ctx, manager: bool) {
    if !enabled(cx) || !cx.path(SECRET_FILE).is_file() {
        return; // the ceph step has not run yet
    }
    let Some(m) = Material::load(&cx.root) else {
        return;
    };
    let Ok(Some(l)) = cx.lan() else {
        return;
    };
    let name = current_hostname(&cx.root);
    if manager && !has_mon(&cx.root, &name) {
        if let Err(e) = ensure_mon_node(cx, &m, &l) {
            eprintln!("ceph: adding a monitor on {name}: {e}");
        }
    }
    if manager && has_mon(&cx.root, &name) && !has_mgr(&cx.root, &name) && standby_due(cx) {
        if let Err(e) = make_mgr(cx, &name) {
            eprintln!("ceph: adding a standby manager on {name}: {e}");
        }
    }
    remember_mons(cx, &m);
    if !mounted(&cx.root) {
        if let Err(e) = ensure_mount(cx, Duration::ZERO) {
            eprintln!("ceph: mounting {MOUNT_POINT}: {e}");
        }
    }
}

/// A monitor node's standby manager is made once another is active, or
/// after NO_MANAGER_LIMIT with none (the founder's may never come back).
const NO_MANAGER_LIMIT: Duration = Duration::from_secs(900);

fn standby_due(cx: &Ctx) -> bool {
    static SINCE: Mutex<Option<Instant>> = Mutex::new(None);
    if mgr_available(cx) {
        return true;
    }
    let mut since = SINCE.lock().unwrap_or_else(|e| e.into_inner());
    since.get_or_insert_with(Instant::now).elapsed() > NO_MANAGER_LIMIT
}

/// The monitors in the cluster's map now, or None when the monitors do
/// not answer.
fn monmap(cx: &Ctx) -> Option<Vec<(String, Ipv4Addr)>> {
    let v = mon_json(cx, json!({"prefix": "mon dump"})).ok()?;
    let mons: Vec<(String, Ipv4Addr)> = v["mons"]
        .as_array()?
        .iter()
        .filter_map(|x| {
            let name = x["name"].as_str()?.to_string();
            let addr = x["addr"].as_str()?.split(':').next()?.parse().ok()?;
            Some((name, addr))
        })
        .collect();
    (!mons.is_empty()).then_some(mons)
}

/// The material a member hands to a joiner, with the monitors as the
/// cluster knows them now.
fn material_for_joiner(cx: &Ctx) -> Option<Material> {
    let mut m = Material::load(&cx.root)?;
    if !m.ready {
        return None;
    }
    if let Some(mons) = monmap(cx) {
        m.mons = mons;
    }
    Some(m)
}

/// Keeps the monitors' addresses on disk until there are three: the
/// founder's material named only itself, and a node coming back asks the
/// others for the time before its monitor starts (`clock-step`).
fn remember_mons(cx: &Ctx, m: &Material) {
    if m.mons.len() >= MANAGERS {
        return;
    }
    if let Some(mons) = monmap(cx).filter(|mons| *mons != m.mons) {
        let mut m = m.clone();
        m.mons = mons;
        if let Err(e) = m.save(&cx.root) {
            eprintln!("ceph: remembering the monitors: {e}");
        }
    }
}
