// SPDX-License-Identifier: Apache-2.0
//! Docker Swarm (device), behind one interface so the state machine can be
//! tested with a fake engine. The real engine is the `docker` CLI through the
//! agent's `Runner` (DOCKER_HOST picks the daemon, as usual).

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::agent::{Result, Runner};

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

pub trait Engine {
    fn info(&self) -> Result<SwarmInfo>;
    fn init(&self, addr: Ipv4Addr) -> Result<()>;
    fn token(&self, manager: bool) -> Result<String>;
    fn join(&self, token: &str, remote: &str, addr: Ipv4Addr) -> Result<()>;
    /// Gives up a join that failed (`docker swarm leave --force`).
    fn leave(&self) -> Result<()>;
    fn label(&self, node_id: &str, labels: &[(String, String)]) -> Result<()>;
    /// `hostname role status availability` per node (managers only).
    fn nodes(&self) -> Result<Vec<String>>;
    /// `(node id, hostname, labels)` per node (managers only).
    fn node_labels(&self) -> Result<Vec<NodeLabels>> {
        Ok(Vec::new())
    }
    /// Whether the service manager is still starting the engine.
    fn starting(&self) -> bool {
        false
    }
}

pub struct DockerCli<'a> {
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

impl DockerCli<'_> {
    /// `docker ARGS` bounded by `timeout`: a hung dockerd must not stop the
    /// daemon's announcements or the agent forever.
    fn docker(&self, secs: u32, args: &[&str]) -> Result<String> {
        let t = secs.to_string();
        let mut argv = vec!["timeout", t.as_str(), "docker"];
        argv.extend_from_slice(args);
        self.runner.run(&argv)
    }
}

impl Engine for DockerCli<'_> {
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
        let out = self.docker(30, &["info", "--format", "{{json .}}"])?;
        parse_info(&out)
    }

    fn init(&self, addr: Ipv4Addr) -> Result<()> {
        let a = addr.to_string();
        self.docker(
            300,
            &[
                "swarm",
                "init",
                "--advertise-addr",
                &a,
                "--listen-addr",
                &format!("{a}:2377"),
            ],
        )
        .map(|_| ())
    }

    fn token(&self, manager: bool) -> Result<String> {
        let role = if manager { "manager" } else { "worker" };
        self.docker(60, &["swarm", "join-token", "-q", role])
            .map(|s| s.trim().to_string())
    }

    fn join(&self, token: &str, remote: &str, addr: Ipv4Addr) -> Result<()> {
        let a = addr.to_string();
        self.docker(
            300,
            &[
                "swarm",
                "join",
                "--token",
                token,
                "--advertise-addr",
                &a,
                "--listen-addr",
                &format!("{a}:2377"),
                remote,
            ],
        )
        .map(|_| ())
    }

    fn leave(&self) -> Result<()> {
        self.docker(120, &["swarm", "leave", "--force"]).map(|_| ())
    }

    fn label(&self, node_id: &str, labels: &[(String, String)]) -> Result<()> {
        let mut argv = vec!["node".to_string(), "update".into()];
        for (k, v) in labels {
            argv.push("--label-add".into());
            argv.push(format!("{k}={v}"));
        }
        argv.push(node_id.to_string());
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.docker(60, &refs).map(|_| ())
    }

    fn node_labels(&self) -> Result<Vec<NodeLabels>> {
        let ids = self.docker(60, &["node", "ls", "-q"])?;
        let mut argv = vec![
            "node",
            "inspect",
            "--format",
            "{{.ID}} {{.Description.Hostname}} {{json .Spec.Labels}}",
        ];
        argv.extend(ids.split_whitespace());
        parse_node_labels(&self.docker(60, &argv)?)
    }

    fn nodes(&self) -> Result<Vec<String>> {
        let out = self.docker(
            60,
            &[
            "node",
            "ls",
            "--format",
            "{{.Hostname}} {{if .ManagerStatus}}manager{{else}}worker{{end}} {{.Status}} {{.Availability}}",
        ])?;
        let mut v: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
        v.sort();
        Ok(v)
    }
}

/// Lines of `ID HOSTNAME {"k":"v",...}` (labels may be `null`).
pub fn parse_node_labels(out: &str) -> Result<Vec<NodeLabels>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.trim().splitn(3, ' ');
            let (id, host, json) = match (it.next(), it.next(), it.next()) {
                (Some(i), Some(h), Some(j)) => (i, h, j),
                _ => return Err(format!("docker node inspect line: {l:?}")),
            };
            let labels: Option<std::collections::BTreeMap<String, String>> =
                serde_json::from_str(json).map_err(|e| format!("node labels {json:?}: {e}"))?;
            Ok((
                id.to_string(),
                host.to_string(),
                labels.unwrap_or_default().into_iter().collect(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_labels_parse_with_and_without_labels() {
        let v =
            parse_node_labels("abc node1 {\"homecloud.role.storage\":\"true\"}\ndef node-1 null\n")
                .expect("parses");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].1, "node1");
        assert_eq!(
            v[0].2,
            vec![("homecloud.role.storage".to_string(), "true".to_string())]
        );
        assert!(v[1].2.is_empty());
        assert!(parse_node_labels("abc").is_err());
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
}
