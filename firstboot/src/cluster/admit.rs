// SPDX-License-Identifier: Apache-2.0
//! The swarm's join answer: a manager hands a joiner its name, a worker
//! token and the address to join through. Every node joins as a worker; the
//! leader promotes managers (managers.rs), so a joiner cut mid-join never
//! costs the swarm its quorum.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::duty::{ClusterView, Duty, Schedule};
use super::join::{JoinAnswer, JoinRefusal, JoinRequest};
use super::swarm::api_worker_token;
use crate::engine::{Ctx, Result};
use crate::host::node::uptime_ms;
use crate::identity::mac_name;

pub const TOPIC: &str = "swarm";

/// What a joiner gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwarmGrant {
    pub name: String,
    pub token: String,
    pub remote: String,
    pub swarm: String,
}

/// The swarm's join answer, with the worker token it holds: fetched from
/// dockerd's API after a look at the swarm (a duty), not per joiner, so a
/// busy manager answers from memory (a `docker swarm join-token` process
/// per joiner timed out after 60 s on a loaded emulated board).
pub struct SwarmAnswer {
    /// (swarm id, worker token, uptime ms when fetched).
    token: Mutex<Option<(String, String, u64)>>,
}

/// The token is fetched again this often (it changes only when rotated).
const TOKEN_MS: u64 = 300_000;

impl SwarmAnswer {
    pub const fn new() -> Self {
        SwarmAnswer {
            token: Mutex::new(None),
        }
    }

    /// The token for `swarm`, from memory, else from dockerd now.
    fn token_for(&self, cx: &Ctx, swarm: &str, refresh: bool) -> Result<String> {
        let now = uptime_ms();
        if let Ok(g) = self.token.lock() {
            if let Some((id, t, at)) = g.as_ref() {
                if id == swarm && !(refresh && now.saturating_sub(*at) >= TOKEN_MS) {
                    return Ok(t.clone());
                }
            }
        }
        let t = api_worker_token(cx.runner, Duration::from_secs(30))?;
        if let Ok(mut g) = self.token.lock() {
            *g = Some((swarm.to_string(), t.clone(), now));
        }
        Ok(t)
    }
}

impl Default for SwarmAnswer {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps the worker token at hand while this node is a manager.
impl Duty for SwarmAnswer {
    fn name(&self) -> &'static str {
        "swarm join token"
    }

    fn schedule(&self) -> Schedule {
        Schedule::AfterPoll
    }

    fn tick(&self, cx: &Ctx, view: &ClusterView) {
        match view.swarm.as_ref().filter(|_| view.manager()) {
            Some(i) => {
                if let Err(e) = self.token_for(cx, &i.cluster_id, true) {
                    eprintln!("fetching the swarm's join token: {e}");
                }
            }
            None => {
                if let Ok(mut g) = self.token.lock() {
                    *g = None;
                }
            }
        }
    }
}

impl JoinAnswer for SwarmAnswer {
    fn topic(&self) -> &'static str {
        TOPIC
    }

    fn answer(
        &self,
        cx: &Ctx,
        view: &ClusterView,
        req: &JoinRequest,
    ) -> std::result::Result<Value, JoinRefusal> {
        let failed = |reason: String| JoinRefusal::Failed { reason };
        // The daemon's last look (3 s old at most), not a docker round trip
        // per joiner: a busy manager must not time out every answer.
        let Some(info) = view.swarm.as_ref().filter(|_| view.manager()) else {
            return Err(JoinRefusal::NotYet {
                reason: "this node is not a swarm manager yet".into(),
            });
        };
        let name = name_for(cx, &req.node).map_err(failed)?;
        let token = self
            .token_for(cx, &info.cluster_id, false)
            .map_err(failed)?;
        let grant = SwarmGrant {
            name,
            token,
            remote: format!("{}:2377", view.lan.addr),
            swarm: info.cluster_id.clone(),
        };
        serde_json::to_value(grant).map_err(|e| failed(e.to_string()))
    }
}

/// Listed nodes keep their configured name; others are named from their
/// MAC as the founder names itself (`hc-XXXXXX`), so no two answering
/// managers can hand out one name twice.
fn name_for(cx: &Ctx, mac: &str) -> Result<String> {
    if let Some(n) = cx.config.node_by_mac(mac) {
        return Ok(n.name.clone());
    }
    let name = mac_name(mac).ok_or_else(|| format!("{mac:?} is not a MAC address"))?;
    if cx.config.nodes.iter().any(|n| n.name == name) {
        return Err(format!(
            "homecloud.toml gives the name {name} to another node, and it is the name of the node with MAC {mac}: rename that node"
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::name_for;
    use crate::config::HomecloudConfig;
    use crate::engine::Ctx;
    use crate::exec::RealRunner;

    fn ctx_with<'a>(runner: &'a RealRunner, nodes: &str) -> Ctx<'a> {
        let text = format!("schema = 1\n[cluster]\nname = \"t\"\ndomain = \"home.arpa\"\n{nodes}");
        let config = HomecloudConfig::parse(&text, "homecloud.toml").expect("config");
        Ctx::new(std::path::Path::new("/nonexistent"), runner, config)
    }

    #[test]
    fn listed_nodes_keep_their_name_others_are_named_from_their_mac() {
        let r = RealRunner;
        let cx = ctx_with(
            &r,
            "[[nodes]]\nname = \"kitchen\"\nmac = \"52:54:00:00:00:01\"\n",
        );
        assert_eq!(
            name_for(&cx, "52:54:00:00:00:01").expect("listed"),
            "kitchen"
        );
        assert_eq!(
            name_for(&cx, "52:54:00:AA:bb:02").expect("unlisted"),
            "hc-aabb02"
        );
        assert!(name_for(&cx, "not-a-mac").is_err());
        // A listed name that is another node's MAC name is refused, not shared.
        let cx = ctx_with(
            &r,
            "[[nodes]]\nname = \"hc-aabb02\"\nmac = \"52:54:00:00:00:01\"\n",
        );
        let e = name_for(&cx, "52:54:00:aa:bb:02").expect_err("taken");
        assert!(e.to_string().contains("rename that node"), "{e}");
    }
}
