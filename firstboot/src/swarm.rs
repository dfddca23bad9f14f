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
}

/// Lines of `ID SELF HOSTNAME STATUS AVAILABILITY [MANAGER-STATUS]`.
pub fn parse_members(out: &str) -> Result<Vec<Member>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if !(5..=6).contains(&f.len()) {
                return Err(format!("docker node ls line: {l:?}"));
            }
            let status = f.get(5).copied().unwrap_or("");
            Ok(Member {
                id: f[0].into(),
                me: f[1] == "true",
                hostname: f[2].into(),
                ready: f[3] == "Ready" && f[4] == "Active",
                manager: !status.is_empty(),
                leader: status == "Leader",
            })
        })
        .collect()
}

pub trait Engine {
    fn info(&self) -> Result<SwarmInfo>;
    fn init(&self, addr: Ipv4Addr) -> Result<()>;
    fn token(&self, manager: bool) -> Result<String>;
    fn join(&self, token: &str, remote: &str, addr: Ipv4Addr) -> Result<()>;
    /// Gives up a join that failed (`docker swarm leave --force`).
    fn leave(&self) -> Result<()>;
    fn label(&self, node_id: &str, labels: &[(String, String)]) -> Result<()>;
    /// Every node of the swarm (managers only).
    fn members(&self) -> Result<Vec<Member>>;
    /// Makes a worker a manager (managers only).
    fn promote(&self, node_id: &str) -> Result<()>;
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

/// The engine's unix socket: `DOCKER_HOST=unix://PATH` as the CLI reads it,
/// else the default.
pub fn socket_path() -> std::path::PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(std::path::PathBuf::from))
        .unwrap_or_else(|| "/run/docker.sock".into())
}

/// `GET /info` over the engine's socket. The daemon's poll loop asks every
/// few seconds; a `docker info` process each time cost an emulated board a
/// large share of its CPU.
pub fn api_info(socket: &std::path::Path, timeout: std::time::Duration) -> Result<SwarmInfo> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket timeout: {e}"))?;
    // HTTP/1.0: the daemon closes the connection after the body, unchunked.
    s.write_all(b"GET /info HTTP/1.0\r\nHost: docker\r\n\r\n")
        .map_err(|e| format!("asking dockerd: {e}"))?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .map_err(|e| format!("reading dockerd's answer: {e}"))?;
    parse_http_info(&String::from_utf8_lossy(&reply))
}

/// The body of an HTTP reply to `GET /info`, if its status is 200.
pub fn parse_http_info(reply: &str) -> Result<SwarmInfo> {
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or("dockerd's answer has no HTTP header")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("dockerd answered {status}: {}", body.trim()));
    }
    parse_info(body)
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

    fn members(&self) -> Result<Vec<Member>> {
        parse_members(&self.docker(
            60,
            &[
                "node",
                "ls",
                "--format",
                "{{.ID}} {{.Self}} {{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}",
            ],
        )?)
    }

    fn promote(&self, node_id: &str) -> Result<()> {
        self.docker(120, &["node", "promote", node_id]).map(|_| ())
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
    fn http_info_reply_parses_and_errors_are_named() {
        let ok = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"Name\":\"n1\",\"Swarm\":{\"NodeID\":\"a\",\"LocalNodeState\":\"active\",\"ControlAvailable\":false}}\n";
        let i = parse_http_info(ok).expect("parses");
        assert_eq!((i.state.as_str(), i.manager), ("active", false));
        let e = parse_http_info("HTTP/1.0 500 Internal Server Error\r\n\r\n{\"message\":\"boom\"}")
            .expect_err("500");
        assert!(e.contains("500") && e.contains("boom"), "{e}");
        assert!(parse_http_info("garbage").is_err());
    }

    #[test]
    fn node_ls_lines_parse_into_members() {
        let m = parse_members(
            "a1 true node1 Ready Active Leader\nb2 false node2 Ready Active\nc3 false node3 Down Active Unreachable\n",
        )
        .expect("parses");
        assert_eq!(m.len(), 3);
        assert!(m[0].me && m[0].leader && m[0].manager && m[0].ready);
        assert!(!m[1].manager && m[1].ready && m[1].hostname == "node2");
        assert!(m[2].manager && !m[2].leader && !m[2].ready);
        assert!(parse_members("a1 true").is_err());
    }

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
