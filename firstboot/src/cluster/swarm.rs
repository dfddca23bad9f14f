// SPDX-License-Identifier: Apache-2.0
//! Docker Swarm (device), behind one interface so the state machine can be
//! tested with a fake engine. The real engine reads and writes through
//! dockerd's API on its socket, never a `docker` process (under load one
//! took 45 s of an emulated board's CPU to start), through the agent's
//! `Runner` (DOCKER_HOST picks the daemon, as usual).

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::exec::{Result, Runner};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwarmInfo {
    /// `inactive`, `pending`, `active`, `error` or `locked`.
    pub state: String,
    pub node_id: String,
    pub cluster_id: String,
    pub manager: bool,
    pub managers: u32,
    pub nodes: u32,
    /// The daemon's idea of this host's name (set when dockerd started).
    pub hostname: String,
    /// Why the state is `error` (e.g. a join whose certificate request timed out).
    pub error: String,
}

/// A swarm node's id, hostname and labels.
pub type NodeLabels = (String, String, Vec<(String, String)>);

/// One line of `docker node ls`, as a manager sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub hostname: String,
    /// The node asking.
    pub me: bool,
    pub manager: bool,
    pub leader: bool,
    /// Status `Ready` and availability `Active`.
    pub ready: bool,
    /// Promoted (its spec says manager) but not yet a raft member: under
    /// load a promotion can stop halfway while the node is down.
    pub pending: bool,
}

pub trait Engine {
    fn info(&self) -> Result<SwarmInfo>;
    fn init(&self, addr: Ipv4Addr) -> Result<()>;
    fn join(&self, token: &str, remote: &str, addr: Ipv4Addr) -> Result<()>;
    /// Gives up a join that failed (`docker swarm leave --force`).
    fn leave(&self) -> Result<()>;
    fn label(&self, node_id: &str, labels: &[(String, String)]) -> Result<()>;
    /// Every node of the swarm (managers only).
    fn members(&self) -> Result<Vec<Member>>;
    /// Makes a worker a manager (managers only).
    fn promote(&self, node_id: &str) -> Result<()>;
    /// Takes a promotion back (managers only).
    fn demote(&self, node_id: &str) -> Result<()> {
        Err(format!("this engine cannot demote {node_id}"))
    }
    /// Removes a node from the swarm's list (managers only).
    fn remove(&self, node_id: &str) -> Result<()> {
        Err(format!("this engine cannot remove {node_id}"))
    }
    /// `(node id, hostname, labels)` per node (managers only).
    fn node_labels(&self) -> Result<Vec<NodeLabels>> {
        Ok(Vec::new())
    }
    /// Whether the service manager is still starting the engine.
    fn starting(&self) -> bool {
        false
    }
}

pub struct DockerApi<'a> {
    pub runner: &'a dyn Runner,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawInfo {
    name: String,
    swarm: RawSwarm,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawSwarm {
    #[serde(rename = "NodeID")]
    node_id: String,
    local_node_state: String,
    control_available: bool,
    managers: Option<u32>,
    nodes: Option<u32>,
    cluster: Option<RawCluster>,
    error: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawCluster {
    #[serde(rename = "ID")]
    id: String,
}

pub fn parse_info(json: &str) -> Result<SwarmInfo> {
    let raw: RawInfo =
        serde_json::from_str(json.trim()).map_err(|e| format!("docker info output: {e}"))?;
    Ok(SwarmInfo {
        state: raw.swarm.local_node_state,
        node_id: raw.swarm.node_id,
        cluster_id: raw.swarm.cluster.map(|c| c.id).unwrap_or_default(),
        manager: raw.swarm.control_available,
        managers: raw.swarm.managers.unwrap_or(0),
        nodes: raw.swarm.nodes.unwrap_or(0),
        hostname: raw.name,
        error: raw.swarm.error,
    })
}

/// `GET /info` through the runner's engine socket. The daemon's poll loop
/// asks every few seconds; a `docker info` process each time cost an
/// emulated board a large share of its CPU.
pub fn api_info(runner: &dyn Runner, timeout: Duration) -> Result<SwarmInfo> {
    parse_info(&runner.engine_get("/info", timeout)?)
}

/// The swarm's worker join token (`GET /swarm`, managers only): no CLI
/// process, so a busy manager still answers joiners in time.
pub fn api_worker_token(runner: &dyn Runner, timeout: Duration) -> Result<String> {
    parse_worker_token(&runner.engine_get("/swarm", timeout)?)
}

/// `JoinTokens.Worker` of the answer to `GET /swarm`.
pub fn parse_worker_token(body: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| format!("dockerd's /swarm answer is not JSON: {e}"))?;
    v["JoinTokens"]["Worker"]
        .as_str()
        .filter(|t| t.starts_with("SWMTKN-"))
        .map(str::to_string)
        .ok_or_else(|| "dockerd's /swarm answer has no worker join token".to_string())
}

/// One entry of `GET /nodes` (only the fields the agent reads).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawNode {
    #[serde(rename = "ID")]
    id: String,
    spec: RawNodeSpec,
    description: RawDescription,
    status: RawNodeStatus,
    manager_status: Option<RawManagerStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawNodeSpec {
    labels: Option<std::collections::BTreeMap<String, String>>,
    availability: String,
    role: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawDescription {
    hostname: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawNodeStatus {
    state: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawManagerStatus {
    leader: bool,
}

/// The answer to `GET /nodes`: members as `docker node ls` shows them
/// (`me` is the node whose id is `own_id`), and each node's labels.
pub fn parse_nodes(body: &str, own_id: &str) -> Result<(Vec<Member>, Vec<NodeLabels>)> {
    let nodes: Vec<RawNode> =
        serde_json::from_str(body).map_err(|e| format!("dockerd's /nodes answer: {e}"))?;
    let members = nodes
        .iter()
        .map(|n| Member {
            id: n.id.clone(),
            hostname: n.description.hostname.clone(),
            me: n.id == own_id,
            manager: n.manager_status.is_some(),
            leader: n.manager_status.as_ref().is_some_and(|m| m.leader),
            ready: n.status.state == "ready" && n.spec.availability == "active",
            pending: n.spec.role == "manager" && n.manager_status.is_none(),
        })
        .collect();
    let labels = nodes
        .into_iter()
        .map(|n| {
            let l = n.spec.labels.unwrap_or_default().into_iter().collect();
            (n.id, n.description.hostname, l)
        })
        .collect();
    Ok((members, labels))
}

/// `GET /info` then `GET /nodes` (managers only): no CLI process.
pub fn api_nodes(runner: &dyn Runner, timeout: Duration) -> Result<(Vec<Member>, Vec<NodeLabels>)> {
    let me = api_info(runner, timeout)?.node_id;
    parse_nodes(&runner.engine_get("/nodes", timeout)?, &me)
}

/// Reads through the engine's socket are bounded like the CLI calls were.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// Writes wait for raft: longer on a busy manager.
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

impl DockerApi<'_> {
    fn post(&self, path: &str, body: &Value, timeout: Duration) -> Result<()> {
        self.runner
            .engine("POST", path, Some(&body.to_string()), timeout)
            .map(|_| ())
    }

    /// Changes one node's spec: read it with its version, change it, write
    /// it back (a concurrent change fails the write; the next round retries).
    fn update_node(&self, node_id: &str, change: impl FnOnce(&mut Value)) -> Result<()> {
        let path = node_path(node_id)?;
        let node: Value = serde_json::from_str(&self.runner.engine_get(&path, API_TIMEOUT)?)
            .map_err(|e| format!("dockerd's {path} answer: {e}"))?;
        let version = node["Version"]["Index"]
            .as_u64()
            .ok_or_else(|| format!("dockerd's {path} answer has no version"))?;
        let mut spec = node["Spec"].clone();
        if !spec.is_object() {
            return Err(format!("dockerd's {path} answer has no spec"));
        }
        change(&mut spec);
        self.post(
            &format!("{path}/update?version={version}"),
            &spec,
            WRITE_TIMEOUT,
        )
    }
}

/// `/nodes/ID`. Ids come from dockerd; anything else is not a path segment.
fn node_path(node_id: &str) -> Result<String> {
    if node_id.is_empty() || !node_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("{node_id:?} is not a swarm node id"));
    }
    Ok(format!("/nodes/{node_id}"))
}

/// The body of `POST /swarm/init`: zero fields keep dockerd's defaults.
pub fn init_request(addr: Ipv4Addr) -> Value {
    json!({
        "ListenAddr": format!("{addr}:2377"),
        "AdvertiseAddr": addr.to_string(),
        // Nodes report every 20 s, not 5 s: three loaded TCG guests
        // missed 5 s heartbeats, every node was marked Down (the leader
        // too) and a promotion stopped halfway. A dead node is noticed in
        // about a minute; the VIP does not wait for it.
        "Spec": { "Dispatcher": { "HeartbeatPeriod": 20_000_000_000u64 } },
    })
}

/// The body of `POST /swarm/join`.
pub fn join_request(token: &str, remote: &str, addr: Ipv4Addr) -> Value {
    json!({
        "ListenAddr": format!("{addr}:2377"),
        "AdvertiseAddr": addr.to_string(),
        "RemoteAddrs": [remote],
        "JoinToken": token,
    })
}

/// `labels` added to a node spec's labels.
pub fn add_labels(spec: &mut Value, labels: &[(String, String)]) {
    if !spec["Labels"].is_object() {
        spec["Labels"] = json!({});
    }
    for (k, v) in labels {
        spec["Labels"][k.as_str()] = Value::String(v.clone());
    }
}

impl Engine for DockerApi<'_> {
    fn starting(&self) -> bool {
        self.runner
            .run(&[
                "systemctl",
                "show",
                "-p",
                "ActiveState",
                "--value",
                "docker.service",
            ])
            .is_ok_and(|s| s.trim() == "activating")
    }

    fn info(&self) -> Result<SwarmInfo> {
        api_info(self.runner, API_TIMEOUT)
    }

    fn init(&self, addr: Ipv4Addr) -> Result<()> {
        self.post("/swarm/init", &init_request(addr), Duration::from_secs(300))
    }

    fn join(&self, token: &str, remote: &str, addr: Ipv4Addr) -> Result<()> {
        self.post(
            "/swarm/join",
            &join_request(token, remote, addr),
            Duration::from_secs(300),
        )
    }

    fn leave(&self) -> Result<()> {
        self.post("/swarm/leave?force=1", &json!({}), WRITE_TIMEOUT)
    }

    fn label(&self, node_id: &str, labels: &[(String, String)]) -> Result<()> {
        self.update_node(node_id, |spec| add_labels(spec, labels))
    }

    fn node_labels(&self) -> Result<Vec<NodeLabels>> {
        api_nodes(self.runner, API_TIMEOUT).map(|(_, l)| l)
    }

    fn members(&self) -> Result<Vec<Member>> {
        api_nodes(self.runner, API_TIMEOUT).map(|(m, _)| m)
    }

    fn promote(&self, node_id: &str) -> Result<()> {
        self.update_node(node_id, |spec| spec["Role"] = json!("manager"))
    }

    fn demote(&self, node_id: &str) -> Result<()> {
        self.update_node(node_id, |spec| spec["Role"] = json!("worker"))
    }

    fn remove(&self, node_id: &str) -> Result<()> {
        let path = format!("{}?force=1", node_path(node_id)?);
        self.runner
            .engine("DELETE", &path, None, WRITE_TIMEOUT)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_token_comes_from_the_swarm_answer() {
        let ok =
            r#"{"ID":"x","JoinTokens":{"Worker":"SWMTKN-1-abc-def","Manager":"SWMTKN-1-abc-ghi"}}"#;
        assert_eq!(parse_worker_token(ok), Ok("SWMTKN-1-abc-def".into()));
        assert!(parse_worker_token(r#"{"JoinTokens":{}}"#).is_err());
        assert!(parse_worker_token("garbage").is_err());
    }

    #[test]
    fn nodes_reply_gives_members_and_labels() {
        let body = r#"[
 {"ID":"a1","Spec":{"Labels":{"homecloud.role.storage":"true"},"Role":"manager","Availability":"active"},
  "Description":{"Hostname":"node1"},"Status":{"State":"ready"},"ManagerStatus":{"Leader":true,"Reachability":"reachable"}},
 {"ID":"b2","Spec":{"Labels":{},"Role":"worker","Availability":"active"},"Description":{"Hostname":"node2"},"Status":{"State":"ready"}},
 {"ID":"c3","Spec":{"Role":"manager","Availability":"active"},"Description":{"Hostname":"node3"},"Status":{"State":"down"},"ManagerStatus":{"Reachability":"unreachable"}},
 {"ID":"d4","Spec":{"Role":"manager","Availability":"active"},"Description":{"Hostname":"node4"},"Status":{"State":"down"}}
]"#;
        let (m, l) = parse_nodes(body, "a1").expect("parses");
        assert_eq!(m.len(), 4);
        assert!(m[3].pending && !m[3].manager, "promoted, not yet in raft");
        assert!(m[0].me && m[0].leader && m[0].manager && m[0].ready);
        assert!(!m[1].me && !m[1].manager && m[1].ready && m[1].hostname == "node2");
        assert!(m[2].manager && !m[2].leader && !m[2].ready && !m[2].pending);
        assert!(!m[0].pending && !m[1].pending);
        assert_eq!(
            l[0],
            (
                "a1".to_string(),
                "node1".to_string(),
                vec![("homecloud.role.storage".to_string(), "true".to_string())]
            )
        );
        assert!(l[1].2.is_empty() && l[2].2.is_empty() && l[3].2.is_empty());
        assert!(parse_nodes("{}", "a1").is_err());
    }

    #[test]
    fn docker_info_parses_inactive_and_active() {
        let i = parse_info(r#"{"Name":"node1","Swarm":{"NodeID":"","LocalNodeState":"inactive","ControlAvailable":false}}"#)
            .expect("inactive");
        assert_eq!(i.state, "inactive");
        assert_eq!(i.hostname, "node1");
        let a = parse_info(r#"{"Name":"node1","Swarm":{"NodeID":"abc","LocalNodeState":"active","ControlAvailable":true,"Managers":3,"Nodes":3,"Cluster":{"ID":"xyz"}}}"#)
            .expect("active");
        assert_eq!(
            (
                a.state.as_str(),
                a.manager,
                a.managers,
                a.cluster_id.as_str()
            ),
            ("active", true, 3, "xyz")
        );
        assert!(parse_info("Cannot connect to the Docker daemon").is_err());
    }

    /// A fake engine socket (unit tests of logic only): answers GET with
    /// `node`, records POSTs.
    struct FakeSocket {
        node: String,
        posts: std::cell::RefCell<Vec<(String, String)>>,
    }

    impl Runner for FakeSocket {
        fn run(&self, argv: &[&str]) -> Result<String> {
            Err(format!("no process here: {argv:?}"))
        }

        fn engine(
            &self,
            method: &str,
            path: &str,
            body: Option<&str>,
            _timeout: Duration,
        ) -> Result<String> {
            match method {
                "GET" => Ok(self.node.clone()),
                _ => {
                    self.posts
                        .borrow_mut()
                        .push((path.into(), body.unwrap_or_default().into()));
                    Ok(String::new())
                }
            }
        }
    }

    #[test]
    fn node_changes_write_back_the_whole_spec_at_the_version_read() {
        let fake = FakeSocket {
            node: r#"{"ID":"abc1","Version":{"Index":42},"Spec":{"Role":"worker","Availability":"active","Labels":{"keep":"1"}}}"#.into(),
            posts: Default::default(),
        };
        let api = DockerApi { runner: &fake };
        api.label("abc1", &[("homecloud.role.storage".into(), "true".into())])
            .expect("label");
        api.promote("abc1").expect("promote");
        let posts = fake.posts.borrow();
        assert_eq!(posts[0].0, "/nodes/abc1/update?version=42");
        let spec: Value = serde_json::from_str(&posts[0].1).expect("json");
        assert_eq!(spec["Labels"]["keep"], "1");
        assert_eq!(spec["Labels"]["homecloud.role.storage"], "true");
        assert_eq!(spec["Availability"], "active");
        let spec: Value = serde_json::from_str(&posts[1].1).expect("json");
        assert_eq!(spec["Role"], "manager");
        // Not an id from dockerd: never a path.
        assert!(api.demote("../swarm").is_err());
        assert_eq!(posts.len(), 2);
    }

    #[test]
    fn init_and_join_ask_for_the_lan_address_and_slow_heartbeats() {
        let a = Ipv4Addr::new(10, 80, 0, 11);
        let i = init_request(a);
        assert_eq!(i["ListenAddr"], "10.80.0.11:2377");
        assert_eq!(i["AdvertiseAddr"], "10.80.0.11");
        assert_eq!(
            i["Spec"]["Dispatcher"]["HeartbeatPeriod"],
            20_000_000_000u64
        );
        let j = join_request("SWMTKN-1-x", "10.80.0.12:2377", a);
        assert_eq!(j["RemoteAddrs"][0], "10.80.0.12:2377");
        assert_eq!(j["JoinToken"], "SWMTKN-1-x");
    }
}
