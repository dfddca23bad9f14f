// SPDX-License-Identifier: Apache-2.0
//! Zero-touch cluster (device): the `network`, `cluster` and `keepalived`
//! steps, and `hc-firstboot serve`, the long-running daemon that announces
//! this node, listens to its peers and answers joins over the Noise channel.
//! The daemon and the agent share what they know through small files in
//! /run/hc-firstboot (peers heard, this node's phase), so either can restart.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::{failpoint, ids, journal, load_config, Ctx, Observed, Result, Runner, Step};
use crate::ceph::{self, Material};
use crate::channel::{self, Channel};
use crate::config::{HomecloudConfig, Role};
use crate::discovery::{self, decide, Announcement, Decision, Peers, Phase};
use crate::identity::{lan_interface, write_atomic, ASSIGNED_NAME};
use crate::keepalived::{self, Vrrp};
use crate::secret::ClusterSecret;
use crate::swarm::{DockerCli, Engine, Member, SwarmInfo};

const RUN_DIR: &str = "/run/hc-firstboot";
const NAMES: &str = "/var/lib/hc-firstboot/names.json";
const MEMBERS: &str = "/var/lib/hc-firstboot/members.json";
/// Peers not heard for this long are gone (a busy board can miss a few
/// one-second announcements).
const LIVE_MS: u64 = 15_000;
/// A member counts for this long after it was last heard: a cluster that
/// exists must never be mistaken for an empty LAN because of lost packets.
const MEMBER_MS: u64 = 120_000;
/// Three managers: Raft quorum survives the loss of one.
const MANAGERS: usize = 3;

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// How long a node listens before electing; nodes powered on within this
/// window of each other form one cluster in one step.
fn window() -> Duration {
    env_secs("HC_DISCOVERY_WINDOW", 30)
}

/// System-wide monotonic milliseconds, comparable between processes.
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|s| s.parse::<f64>().ok())
        })
        .map_or(0, |s| (s * 1000.0) as u64)
}

pub(crate) fn run_path(root: &Path, name: &str) -> PathBuf {
    root.join(RUN_DIR.trim_start_matches('/')).join(name)
}

pub(crate) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let b = serde_json::to_vec_pretty(v).map_err(|e| format!("encoding: {e}"))?;
    write_atomic(path, &b)
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> T {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The LAN interface, its MAC and IPv4 address, prefix and broadcast.
#[derive(Debug, Clone)]
pub struct Lan {
    pub interface: String,
    pub mac: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub broadcast: Ipv4Addr,
}

pub(crate) fn lan(cx: &Ctx) -> Result<Option<Lan>> {
    let (iface, mac) = match &cx.config.network.interface {
        Some(i) => {
            let m = std::fs::read_to_string(cx.path(&format!("/sys/class/net/{i}/address")))
                .map_err(|e| format!("network.interface {i}: {e}"))?;
            (i.clone(), m.trim().to_lowercase())
        }
        None => lan_interface(cx)?,
    };
    let out = cx
        .runner
        .run(&["ip", "-4", "-o", "addr", "show", "dev", &iface])?;
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

fn order_of(config: &HomecloudConfig, mac: &str) -> u32 {
    config
        .nodes
        .iter()
        .position(|n| crate::config::normalize_mac(&n.mac).as_deref() == Some(mac))
        .map_or(u32::MAX, |i| i as u32)
}

/// Peers the daemon heard, as it last wrote them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PeerFile {
    pub written_ms: u64,
    /// When the daemon started listening.
    #[serde(default)]
    pub started_ms: u64,
    pub me: Option<Announcement>,
    pub peers: Peers,
}

// ---------------------------------------------------------------- network

pub struct Network;

impl Step for Network {
    fn name(&self) -> &'static str {
        "network"
    }

    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        Ok(match lan(cx)? {
            Some(l) => Observed::Done(BTreeMap::from([
                ("interface".into(), l.interface),
                ("address".into(), format!("{}/{}", l.addr, l.prefix)),
            ])),
            None => Observed::Pending,
        })
    }

    fn apply(&self, cx: &Ctx) -> Result<()> {
        // DHCP (or static config) is systemd-networkd's job; wait for it.
        let deadline = std::time::Instant::now() + env_secs("HC_NETWORK_TIMEOUT", 600);
        while std::time::Instant::now() < deadline {
            if lan(cx)?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        Err("no IPv4 address on the LAN interface: check the cable and the DHCP server".into())
    }
}

// ---------------------------------------------------------------- cluster

pub struct Cluster;

fn wait_docker(engine: &dyn Engine) -> Result<SwarmInfo> {
    let deadline = std::time::Instant::now() + env_secs("HC_DOCKER_TIMEOUT", 900);
    loop {
        match engine.info() {
            Ok(i) => return Ok(i),
            // No docker CLI at all: waiting will not help.
            Err(e) if e.starts_with("starting docker") => {
                return Err(format!(
                    "{e}: the image lacks the docker CLI (package docker-cli)"
                ))
            }
            // Past the deadline, keep waiting only while systemd is still
            // starting dockerd (minutes when a board or emulator is busy).
            Err(e) if std::time::Instant::now() > deadline && !engine_starting(engine) => {
                return Err(format!("dockerd did not answer: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

fn engine_starting(engine: &dyn Engine) -> bool {
    engine.starting()
}

fn swarm_facts(i: &SwarmInfo) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("swarm".into(), i.cluster_id.clone()),
        (
            "role".into(),
            if i.manager { "manager" } else { "worker" }.into(),
        ),
        ("node id".into(), i.node_id.clone()),
    ])
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub node: String,
    pub addr: Ipv4Addr,
    #[serde(default)]
    pub want: Want,
}

/// What a joiner asks for: the swarm token, or (a member) the Ceph cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Want {
    #[default]
    Swarm,
    Ceph,
}

/// A member's answer when it has no Ceph cluster to hand out yet.
const NO_CEPH_YET: &str = "no Ceph cluster here yet";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum JoinResponse {
    Ok {
        name: String,
        token: String,
        remote: String,
        swarm: String,
    },
    Ceph {
        material: Material,
    },
    Error {
        message: String,
    },
}

fn me_announcement(cx: &Ctx, l: &Lan, phase: Phase) -> Announcement {
    Announcement {
        cluster: cx.config.cluster.name.clone(),
        node: l.mac.clone(),
        name: cx.config.node_by_mac(&l.mac).map(|n| n.name.clone()),
        addr: l.addr,
        order: order_of(&cx.config, &l.mac),
        phase,
        session: 0,
        seq: 0,
    }
}

fn set_phase(cx: &Ctx, phase: &str) -> Result<()> {
    let p = run_path(&cx.root, "phase");
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    write_atomic(&p, phase.as_bytes())
}

/// Asks `addr` to let this node in; the answer carries the swarm token.
fn request_join(secret: &ClusterSecret, addr: Ipv4Addr, req: &JoinRequest) -> Result<JoinResponse> {
    let mut ch = Channel::connect(
        SocketAddr::V4(SocketAddrV4::new(addr, channel::PORT)),
        secret,
        // A manager answers after a few docker calls: seconds on a board.
        Duration::from_secs(120),
    )?;
    ch.send_json(req)?;
    ch.recv_json()
}

/// Members' addresses in node order, as their announcements say.
pub(crate) fn member_addrs(cx: &Ctx, l: &Lan) -> Vec<Ipv4Addr> {
    let file: PeerFile = read_json(&run_path(&cx.root, "peers.json"));
    let mut v: Vec<(u32, Ipv4Addr)> = file
        .peers
        .peers
        .values()
        .filter(|h| matches!(h.ann.phase, Phase::Member { .. }) && h.ann.addr != l.addr)
        .map(|h| (h.ann.order, h.ann.addr))
        .collect();
    v.sort();
    v.into_iter().map(|(_, a)| a).collect()
}

/// Asks a member for the Ceph cluster's fsid, keys and monitors.
pub(crate) fn request_ceph(cx: &Ctx, addr: Ipv4Addr, l: &Lan) -> Result<Option<Material>> {
    let secret = ClusterSecret::load(&cx.root)?;
    let req = JoinRequest {
        node: l.mac.clone(),
        addr: l.addr,
        want: Want::Ceph,
    };
    match request_join(&secret, addr, &req)? {
        JoinResponse::Ceph { material } => Ok(Some(material)),
        JoinResponse::Error { message } if message == NO_CEPH_YET => Ok(None),
        JoinResponse::Error { message } => Err(message),
        JoinResponse::Ok { .. } => Err("answered with a swarm token".into()),
    }
}

fn adopt_name(cx: &Ctx, mac: &str, name: &str) -> Result<()> {
    // Listed nodes keep their configured name; an assigned one is kept once.
    if cx.path(ASSIGNED_NAME).is_file() || cx.config.node_by_mac(mac).is_some() {
        return Ok(());
    }
    write_atomic(&cx.path(ASSIGNED_NAME), format!("{name}\n").as_bytes())?;
    write_atomic(&cx.path("/etc/hostname"), format!("{name}\n").as_bytes())?;
    let _ = std::fs::write(cx.path("/proc/sys/kernel/hostname"), name.as_bytes());
    Ok(())
}

pub(crate) fn current_hostname(cx: &Ctx) -> String {
    std::fs::read_to_string(cx.path("/proc/sys/kernel/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Step for Cluster {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        observe_swarm(&DockerCli { runner: cx.runner }, Duration::from_secs(3))
    }

    fn apply(&self, cx: &Ctx) -> Result<()> {
        let engine = DockerCli { runner: cx.runner };
        converge_swarm(cx, &engine)
    }
}

/// Done once the swarm is active. A busy card can miss one `docker info`
/// (timeout) or show `pending` for a moment, so only `inactive` is taken
/// at its word at once; other answers are asked again for a while.
pub fn observe_swarm(engine: &dyn Engine, pause: Duration) -> Result<Observed> {
    const TRIES: u32 = 10;
    for n in 1..=TRIES {
        match engine.info() {
            Ok(i) if i.state == "active" => return Ok(Observed::Done(swarm_facts(&i))),
            Ok(i) if i.state == "inactive" => return Ok(Observed::Pending),
            _ if n < TRIES => std::thread::sleep(pause),
            _ => {}
        }
    }
    Ok(Observed::Pending)
}

/// Waits for a swarm this node is already part of to become active (after
/// a power cut right after `join`, or while managers come back).
fn wait_active(engine: &dyn Engine) -> Result<()> {
    let deadline = std::time::Instant::now() + env_secs("HC_DOCKER_TIMEOUT", 900);
    loop {
        let state = match engine.info() {
            Ok(i) if i.state == "active" => return Ok(()),
            Ok(i) => i.state,
            Err(e) => e,
        };
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "this node joined a swarm but it is not active ({state}): its managers are unreachable"
            ));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A join that ended in `error` before the node got its identity.
fn failed_join(i: &SwarmInfo) -> bool {
    i.state == "error" && i.node_id.is_empty()
}

/// After `swarm join` returned (or timed out "continuing in the
/// background"): waits until the node is active, or says why it failed.
fn wait_joined(engine: &dyn Engine) -> Result<()> {
    let deadline = std::time::Instant::now() + env_secs("HC_DOCKER_TIMEOUT", 900);
    loop {
        match engine.info() {
            Ok(i) if i.state == "active" => return Ok(()),
            Ok(i) if failed_join(&i) => return Err(i.error),
            _ if std::time::Instant::now() > deadline => {
                return Err("the join did not complete in time".into())
            }
            _ => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// `swarm init`, tried again when it failed: on a busy card raft can miss
/// its deadline ("error updating cluster settings: context deadline
/// exceeded", seen under emulation) and dockerd rolls the swarm back.
fn init_swarm(engine: &dyn Engine, addr: Ipv4Addr, pause: Duration) -> Result<()> {
    const TRIES: u32 = 4;
    let mut n = 0;
    loop {
        n += 1;
        let Err(e) = engine.init(addr) else {
            return Ok(());
        };
        match engine.info() {
            // It worked anyway (the command timed out on a slow card).
            Ok(i) if i.state == "active" || i.state == "pending" => return Ok(()),
            _ if n >= TRIES => return Err(format!("swarm init failed {n} times: {e}")),
            Ok(i) if i.state == "inactive" => {}
            // Half made: start over.
            _ => engine.leave()?,
        }
        eprintln!("swarm init failed ({e}); trying again");
        std::thread::sleep(pause);
    }
}

/// An ignored node is tried again after this long.
const IGNORE_MS: u64 = 600_000;

/// Discovery, election and bootstrap or join, until this node is in a swarm.
pub fn converge_swarm(cx: &Ctx, engine: &dyn Engine) -> Result<()> {
    let secret = ClusterSecret::load(&cx.root)?;
    let l = lan(cx)?.ok_or("no LAN address (the network step should have waited for one)")?;
    let mut info = wait_docker(engine)?;
    // Docker names the swarm node after the hostname it saw when it started.
    if info.hostname != current_hostname(cx) && !current_hostname(cx).is_empty() {
        cx.runner.run(&["systemctl", "restart", "docker"])?;
        info = wait_docker(engine)?;
    }
    if failed_join(&info) {
        // A join that never completed (cut, or its certificate request
        // timed out): nothing of a swarm is here, so start over.
        engine.leave()?;
        info = wait_docker(engine)?;
    }
    if info.state != "inactive" {
        // Joined before (maybe cut right after): never init or join again.
        return wait_active(engine);
    }
    set_phase(cx, "discovering")?;
    let started = uptime_ms();
    let mut me = me_announcement(cx, &l, Phase::Discovering);
    let mut ignored: BTreeMap<String, u64> = BTreeMap::new();
    let mut waiting: Option<(String, u64)> = None;
    let mut join_failures = 0u32;
    let mut not_yet = 0u32;
    loop {
        let now = uptime_ms();
        ignored.retain(|_, at| now.saturating_sub(*at) < IGNORE_MS);
        let file: PeerFile = read_json(&run_path(&cx.root, "peers.json"));
        // Decide only on what the daemon heard just now, over a full window
        // of its own listening: a restarted daemon has forgotten its peers.
        if now.saturating_sub(file.written_ms) > 3000 {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        let listening_since = started.max(file.started_ms);
        let live: Vec<&Announcement> = file
            .peers
            .peers
            .values()
            .filter(|h| {
                let age = now.saturating_sub(h.at_ms);
                match h.ann.phase {
                    // Members are never ignored: no rival swarm next to a live one.
                    Phase::Member { .. } => age <= MEMBER_MS,
                    _ => age <= LIVE_MS && !ignored.contains_key(&h.ann.node),
                }
            })
            .map(|h| &h.ann)
            .collect();
        let window_over = now.saturating_sub(listening_since) >= window().as_millis() as u64;
        if window_over && live.iter().all(|a| a.node == l.mac) {
            // Only announcements we cannot authenticate: say so instead of
            // forming a rival cluster next to the real one.
            if let Some((addr, _)) = file.peers.rejected.iter().find(|(_, r)| {
                r.cluster == cx.config.cluster.name && now.saturating_sub(r.at_ms) < LIVE_MS
            }) {
                if let Ok(a) = addr.parse::<Ipv4Addr>() {
                    let req = JoinRequest {
                        node: l.mac.clone(),
                        addr: l.addr,
                        want: Want::Swarm,
                    };
                    if let Err(e) = request_join(&secret, a, &req) {
                        if e.contains("does not match") {
                            return Err(format!(
                                "{e}; nodes of cluster {} at {addr} use another cluster secret, so this node stays out",
                                cx.config.cluster.name
                            ));
                        }
                    }
                }
            }
        }
        match decide(&me, &live, window_over) {
            Decision::Bootstrap if me.phase == Phase::Bootstrapping => {
                journal(
                    ids::SWARM_BOOTSTRAP,
                    5,
                    &format!("elected bootstrap node: creating the swarm on {}", l.addr),
                    &[],
                );
                // Before init: whoever creates the swarm creates Ceph too.
                write_atomic(&cx.path(ceph::FOUNDER), b"")?;
                init_swarm(engine, l.addr, Duration::from_secs(5))?;
                failpoint("cluster:after-init");
                return wait_active(engine);
            }
            Decision::Bootstrap => {
                // Announce the intent, then decide again once everyone heard it.
                set_phase(cx, "bootstrapping")?;
                me.phase = Phase::Bootstrapping;
                std::thread::sleep(Duration::from_secs(6));
                continue;
            }
            Decision::Join { node, addr } => {
                let req = JoinRequest {
                    node: l.mac.clone(),
                    addr: l.addr,
                    want: Want::Swarm,
                };
                match request_join(&secret, addr, &req) {
                    Ok(JoinResponse::Ok {
                        name,
                        token,
                        remote,
                        swarm,
                    }) => {
                        adopt_name(cx, &l.mac, &name)?;
                        if info.hostname != current_hostname(cx) {
                            cx.runner.run(&["systemctl", "restart", "docker"])?;
                            wait_docker(engine)?;
                        }
                        // A joiner founds nothing (it may have meant to, once).
                        let f = cx.path(ceph::FOUNDER);
                        if f.exists() {
                            std::fs::remove_file(&f)
                                .map_err(|e| format!("removing {}: {e}", f.display()))?;
                        }
                        failpoint("cluster:before-join");
                        if let Err(e) = engine.join(&token, &remote, l.addr) {
                            // "will continue in the background" on slow cards.
                            if !engine.info().is_ok_and(|i| i.state != "inactive") {
                                return Err(e);
                            }
                        }
                        failpoint("cluster:after-join");
                        if let Err(e) = wait_joined(engine) {
                            // Busy managers can miss the join's deadlines;
                            // a later attempt usually gets through.
                            join_failures += 1;
                            eprintln!("join through {addr} did not complete: {e}; trying again");
                            engine.leave()?;
                            if join_failures >= 5 {
                                return Err(format!("joining through {addr} failed 5 times: {e}"));
                            }
                            std::thread::sleep(Duration::from_secs(5));
                            continue;
                        }
                        journal(
                            ids::SWARM_JOINED,
                            5,
                            &format!("joined swarm {swarm} through {addr} as a worker"),
                            &[("HC_SWARM", &swarm)],
                        );
                        return wait_active(engine);
                    }
                    Ok(JoinResponse::Ceph { .. }) => {
                        return Err(format!("{addr} answered a swarm join with Ceph keys"))
                    }
                    Ok(JoinResponse::Error { message }) => {
                        join_failures = 0;
                        not_yet += 1;
                        eprintln!("join through {addr} ({node}) refused for now: {message}");
                        if not_yet > 600 {
                            return Err(format!(
                                "{addr} kept answering \"{message}\" for 10 minutes"
                            ));
                        }
                    }
                    Err(e) if e.contains("does not match") => return Err(e),
                    Err(e) => {
                        join_failures += 1;
                        eprintln!("join through {addr} ({node}) failed: {e}");
                        // Try another member for a while; members still
                        // count, so this never leads to a second swarm.
                        if join_failures >= 20 {
                            ignored.insert(node, now);
                            join_failures = 0;
                        }
                    }
                }
            }
            Decision::WaitFor { node } => {
                if me.phase == Phase::Bootstrapping {
                    // A lower node is bootstrapping too: let it.
                    set_phase(cx, "discovering")?;
                    me.phase = Phase::Discovering;
                }
                let since = match &waiting {
                    Some((n, t)) if *n == node => *t,
                    _ => {
                        waiting = Some((node.clone(), now));
                        now
                    }
                };
                // A bootstrap node that never finishes (it died) is dropped
                // for a while; a member is never dropped (see above).
                if now.saturating_sub(since) > 300_000 {
                    ignored.insert(node, now);
                    waiting = None;
                }
            }
            Decision::Listen => {}
        }
        if engine.info().is_ok_and(|i| i.state == "active") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

// ------------------------------------------------------------- keepalived

pub struct Keepalived;

/// Members' LAN addresses in node order, this node included; remembered
/// across boots so a node that is down stays a unicast peer.
/// Members are the nodes announcing themselves as members: announcements are
/// authenticated with this cluster's secret, so they are of this cluster.
fn members(cx: &Ctx, l: &Lan) -> Vec<Ipv4Addr> {
    let before: BTreeMap<String, (u32, Ipv4Addr)> = read_json(&cx.path(MEMBERS));
    let mut known = before.clone();
    known.insert(l.mac.clone(), (order_of(&cx.config, &l.mac), l.addr));
    let file: PeerFile = read_json(&run_path(&cx.root, "peers.json"));
    for h in file.peers.peers.values() {
        if let Phase::Member { .. } = &h.ann.phase {
            known.insert(h.ann.node.clone(), (h.ann.order, h.ann.addr));
        }
    }
    // The daemon calls this every few seconds: write the card only on change.
    if known != before {
        let _ = write_json(&cx.path(MEMBERS), &known);
    }
    let mut v: Vec<(u32, String, Ipv4Addr)> =
        known.into_iter().map(|(mac, (o, a))| (o, mac, a)).collect();
    v.sort();
    v.into_iter().map(|(_, _, a)| a).collect()
}

fn desired_conf(cx: &Ctx) -> Result<Option<String>> {
    let Some(vip) = cx.config.network.vip.clone() else {
        return Ok(None);
    };
    // No docker call here: a busy dockerd must not fail this step.
    let l = lan(cx)?.ok_or("no LAN address")?;
    let members = members(cx, &l);
    Ok(Some(keepalived::render(&Vrrp {
        cluster: cx.config.cluster.name.clone(),
        name: current_hostname(cx),
        interface: l.interface,
        addr: l.addr,
        members,
        vip,
        fault_file: cx.path(keepalived::FAULT_FILE).display().to_string(),
    })))
}

impl Step for Keepalived {
    fn name(&self) -> &'static str {
        "keepalived"
    }

    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        let Some(want) = desired_conf(cx)? else {
            return Ok(Observed::Done(BTreeMap::from([(
                "vip".into(),
                "none (network.vip is not set)".into(),
            )])));
        };
        let have = std::fs::read_to_string(cx.path(keepalived::CONF_PATH)).unwrap_or_default();
        let active = cx
            .runner
            .run(&["systemctl", "is-active", "keepalived"])
            .is_ok();
        // The peer list is the daemon's to keep current (members join after
        // this step ran): this step needs the VIP configured and keepalived up.
        let same_vip = have.lines().find(|l| l.contains(" dev "))
            == want.lines().find(|l| l.contains(" dev "));
        if same_vip && active {
            let peers = want
                .lines()
                .filter(|l| l.starts_with("        ") && !l.contains("dev"))
                .count();
            return Ok(Observed::Done(BTreeMap::from([
                (
                    "vip".into(),
                    cx.config.network.vip.clone().unwrap_or_default(),
                ),
                ("unicast peers".into(), peers.to_string()),
            ])));
        }
        Ok(Observed::Pending)
    }

    fn apply(&self, cx: &Ctx) -> Result<()> {
        let Some(want) = desired_conf(cx)? else {
            return Ok(());
        };
        let p = cx.path(keepalived::CONF_PATH);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        write_atomic(&p, want.as_bytes())?;
        failpoint("keepalived:after-conf");
        cx.runner.run(&["systemctl", "enable", "keepalived"])?;
        cx.runner.run(&["systemctl", "restart", "keepalived"])?;
        Ok(())
    }
}

// ------------------------------------------------------------------ serve

struct Daemon<'a> {
    root: PathBuf,
    runner: &'a (dyn Runner + Sync),
    config: HomecloudConfig,
    secret: ClusterSecret,
    lan: Lan,
}

impl Daemon<'_> {
    fn cx(&self) -> Ctx<'_> {
        Ctx {
            root: self.root.clone(),
            runner: self.runner,
            config: self.config.clone(),
        }
    }

    fn phase(&self, info: Option<&SwarmInfo>) -> Phase {
        match info {
            Some(i) if i.state == "active" => Phase::Member {
                swarm: i.cluster_id.clone(),
                serves: i.manager,
            },
            // Joined before but the swarm is not up (dockerd starting, or
            // managers still coming back after a power cut): a member all
            // the same, so nobody forms a rival swarm meanwhile.
            _ if self.was_member() => Phase::Member {
                swarm: String::new(),
                serves: false,
            },
            _ => match std::fs::read_to_string(run_path(&self.root, "phase")).as_deref() {
                Ok("bootstrapping") => Phase::Bootstrapping,
                _ => Phase::Discovering,
            },
        }
    }

    fn was_member(&self) -> bool {
        crate::state::State::load(&self.root).is_ok_and(|st| {
            st.steps
                .get("cluster")
                .is_some_and(|r| r.status == crate::state::Status::Done)
        })
    }

    fn answer(&self, req: &JoinRequest) -> Result<JoinResponse> {
        if req.want == Want::Ceph {
            return Ok(match ceph::material_for_joiner(&self.cx()) {
                Some(material) => JoinResponse::Ceph { material },
                None => JoinResponse::Error {
                    message: NO_CEPH_YET.into(),
                },
            });
        }
        let engine = DockerCli {
            runner: self.runner,
        };
        let info = engine.info()?;
        if info.state != "active" || !info.manager {
            return Ok(JoinResponse::Error {
                message: "this node is not a swarm manager yet".into(),
            });
        }
        let name = self.name_for(&req.node)?;
        // Every node joins as a worker; the leader promotes managers
        // (reconcile_managers), so a joiner cut mid-join never costs the
        // swarm its quorum.
        let token = engine.token(false)?;
        Ok(JoinResponse::Ok {
            name,
            token,
            remote: format!("{}:2377", self.lan.addr),
            swarm: info.cluster_id,
        })
    }

    /// Listed nodes keep their configured name; others get `node-N` in join order.
    fn name_for(&self, mac: &str) -> Result<String> {
        if let Some(n) = self.config.node_by_mac(mac) {
            return Ok(n.name.clone());
        }
        let path = self.root.join(NAMES.trim_start_matches('/'));
        let mut names: BTreeMap<String, String> = read_json(&path);
        if let Some(n) = names.get(mac) {
            return Ok(n.clone());
        }
        let taken: Vec<&str> = self
            .config
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .chain(names.values().map(String::as_str))
            .collect();
        let name = (1..)
            .map(|k| format!("node-{k}"))
            .find(|n| !taken.contains(&n.as_str()))
            .unwrap_or_default();
        names.insert(mac.to_string(), name.clone());
        write_json(&path, &names)?;
        Ok(name)
    }

    fn serve_join(&self, stream: std::net::TcpStream) {
        let mut ch = match Channel::accept(stream, &self.secret, Duration::from_secs(120)) {
            Ok(c) => c,
            Err(e) => {
                journal(ids::JOIN_REFUSED, 4, &format!("join channel: {e}"), &[]);
                return;
            }
        };
        let resp = match ch.recv_json::<JoinRequest>() {
            Ok(req) => self
                .answer(&req)
                .unwrap_or_else(|e| JoinResponse::Error { message: e }),
            Err(e) => JoinResponse::Error { message: e },
        };
        let _ = ch.send_json(&resp);
    }
}

/// `hc-firstboot serve`: runs for the node's lifetime.
pub fn serve(root: &Path, runner: &'static (dyn Runner + Sync)) -> Result<()> {
    let config = load_config(root)?;
    let secret = ClusterSecret::load(root)?;
    let probe = Ctx {
        root: root.to_path_buf(),
        runner,
        config: config.clone(),
    };
    let lan = loop {
        if let Some(l) = lan(&probe)? {
            break l;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let d = Arc::new(Daemon {
        root: root.to_path_buf(),
        runner,
        config,
        secret,
        lan,
    });
    let listener = TcpListener::bind(("0.0.0.0", channel::PORT))
        .map_err(|e| format!("binding the join channel port {}: {e}", channel::PORT))?;
    {
        let d = Arc::clone(&d);
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let d = Arc::clone(&d);
                std::thread::spawn(move || d.serve_join(s));
            }
        });
    }
    let sock = UdpSocket::bind(("0.0.0.0", discovery::PORT))
        .map_err(|e| format!("binding the discovery port {}: {e}", discovery::PORT))?;
    sock.set_broadcast(true)
        .map_err(|e| format!("broadcast: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| format!("socket: {e}"))?;
    let mut session = [0u8; 8];
    getrandom::getrandom(&mut session).map_err(|e| format!("no randomness: {e}"))?;
    let session = u64::from_le_bytes(session);
    // dockerd is polled on its own thread: a `docker` call takes seconds on
    // a slow board (and more under emulation), announcements must not wait.
    let info: Arc<Mutex<Option<SwarmInfo>>> = Arc::new(Mutex::new(None));
    {
        let d = Arc::clone(&d);
        let info = Arc::clone(&info);
        let mut labelled_at = 0u64;
        let mut fault_was = None;
        let socket = crate::swarm::socket_path();
        std::thread::spawn(move || loop {
            let i = crate::swarm::api_info(&socket, Duration::from_secs(30)).ok();
            let active = i.as_ref().is_some_and(|i| i.state == "active");
            let manager = active && i.as_ref().is_some_and(|i| i.manager);
            // Member counts from /info: `docker node ls` only when a
            // promotion may be due.
            let promote = manager
                && i.as_ref()
                    .is_some_and(|i| (i.managers as usize) < MANAGERS && i.nodes > i.managers);
            // keepalived's health input; written on change only (keepalived
            // rereads the file on every change).
            if fault_was != Some(!active) {
                let f = d.cx().path(keepalived::FAULT_FILE);
                if write_atomic(&f, if active { b"0\n" } else { b"1\n" }).is_ok() {
                    fault_was = Some(!active);
                }
            }
            if let Ok(mut g) = info.lock() {
                *g = i;
            }
            if active {
                reconcile_keepalived(&d.cx());
            }
            if promote {
                reconcile_managers(&d.config, &DockerCli { runner: d.runner });
            }
            if manager && uptime_ms().saturating_sub(labelled_at) >= LABEL_MS {
                reconcile_labels(&d.config, &DockerCli { runner: d.runner });
                labelled_at = uptime_ms();
            }
            std::thread::sleep(Duration::from_secs(3));
        });
    }
    std::thread::spawn(|| {
        if let Err(e) = crate::timesync::serve() {
            eprintln!("{e}");
        }
    });
    {
        // Ceph calls take seconds (more under emulation): their own thread.
        let d = Arc::clone(&d);
        let info = Arc::clone(&info);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(20));
            let manager = info
                .lock()
                .ok()
                .and_then(|g| g.as_ref().map(|i| i.state == "active" && i.manager))
                .unwrap_or(false);
            ceph::reconcile(&d.cx(), manager);
        });
    }
    let mut peers = Peers::default();
    let mut seq = 0u64;
    let mut last_send = 0u64;
    let mut buf = [0u8; 4096];
    let started_ms = uptime_ms();
    loop {
        let now = uptime_ms();
        if now.saturating_sub(last_send) >= 1000 {
            seq += 1;
            let current = info.lock().ok().and_then(|g| g.clone());
            let mut me = me_announcement(&d.cx(), &d.lan, d.phase(current.as_ref()));
            me.session = session;
            me.seq = seq;
            let wire = discovery::seal(&me, &d.secret);
            let _ = sock.send_to(&wire, (d.lan.broadcast, discovery::PORT));
            last_send = now;
            let file = PeerFile {
                written_ms: now,
                started_ms,
                me: Some(me),
                peers: peers.clone(),
            };
            let _ = write_json(&run_path(root, "peers.json"), &file);
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            match discovery::open(&buf[..n], &d.secret) {
                Ok(a) if a.node != d.lan.mac => {
                    peers.accept(a, uptime_ms());
                }
                Ok(_) | Err(discovery::OpenError::Foreign) => {}
                Err(discovery::OpenError::BadTag { cluster, .. }) => {
                    peers.reject(cluster, from.ip().to_string(), uptime_ms());
                }
            }
        }
    }
}

/// Managers look at node labels this often.
const LABEL_MS: u64 = 30_000;

/// Gives every swarm node the labels of its roles (placement constraints of
/// the services use them). Any manager may do it; the result is the same.
pub fn reconcile_labels(config: &HomecloudConfig, engine: &dyn Engine) {
    let Ok(nodes) = engine.node_labels() else {
        return;
    };
    for (id, host, have) in nodes {
        let missing: Vec<(String, String)> = config
            .role_labels(&host)
            .into_iter()
            .filter(|l| !have.contains(l))
            .collect();
        if !missing.is_empty() {
            if let Err(e) = engine.label(&id, &missing) {
                eprintln!("labelling {host}: {e}");
            }
        }
    }
}

/// Workers the leader promotes now, best first: from one manager only two
/// at once (two managers lose quorum as easily as one), up to three.
/// Nodes whose roles say `worker` are never promoted.
pub fn to_promote(config: &HomecloudConfig, members: &[Member]) -> Vec<String> {
    let managers = members.iter().filter(|m| m.manager).count();
    let order = |host: &str| {
        config
            .nodes
            .iter()
            .position(|n| n.name == host)
            .unwrap_or(usize::MAX)
    };
    let mut cands: Vec<&Member> = members
        .iter()
        .filter(|m| !m.manager && m.ready)
        .filter(|m| {
            !config
                .nodes
                .iter()
                .any(|n| n.name == m.hostname && n.roles.contains(&Role::Worker))
        })
        .collect();
    cands.sort_by(|a, b| (order(&a.hostname), &a.hostname).cmp(&(order(&b.hostname), &b.hostname)));
    let mut k = MANAGERS.saturating_sub(managers).min(cands.len());
    if (managers + k) % 2 == 0 && k > 0 {
        k -= 1;
    }
    cands[..k].iter().map(|m| m.id.clone()).collect()
}

/// Run by every manager; only the leader acts, so two managers never
/// promote past three.
pub fn reconcile_managers(config: &HomecloudConfig, engine: &dyn Engine) {
    let Ok(members) = engine.members() else {
        return;
    };
    if !members.iter().any(|m| m.me && m.leader) {
        return;
    }
    for id in to_promote(config, &members) {
        match engine.promote(&id) {
            Ok(()) => journal(
                ids::SWARM_PROMOTED,
                5,
                &format!("promoted swarm node {id} to manager"),
                &[],
            ),
            Err(e) => eprintln!("promoting {id}: {e}"),
        }
    }
}

/// New members change every node's unicast peers: re-render and reload.
fn reconcile_keepalived(cx: &Ctx) {
    if !cx.path(keepalived::CONF_PATH).is_file() {
        return; // the agent's keepalived step has not run yet
    }
    if let Ok(Some(want)) = desired_conf(cx) {
        let have = std::fs::read_to_string(cx.path(keepalived::CONF_PATH)).unwrap_or_default();
        if have != want && write_atomic(&cx.path(keepalived::CONF_PATH), want.as_bytes()).is_ok() {
            let _ = cx.runner.run(&["systemctl", "reload", "keepalived"]);
        }
    }
}

/// Lines for `hc status`: what this node hears and holds right now.
pub fn status_lines(root: &Path, runner: &dyn Runner) -> String {
    let mut out = String::new();
    let file: PeerFile = read_json(&run_path(root, "peers.json"));
    let now = uptime_ms();
    if let Some(me) = &file.me {
        out.push_str(&format!(
            "cluster: {} (this node {} {})\n",
            me.cluster, me.node, me.addr
        ));
    }
    for a in file.peers.live(now, LIVE_MS) {
        let phase = match &a.phase {
            Phase::Discovering => "discovering".to_string(),
            Phase::Bootstrapping => "bootstrapping".to_string(),
            Phase::Member { serves, .. } => if *serves {
                "member (manager)"
            } else {
                "member"
            }
            .to_string(),
        };
        out.push_str(&format!(
            "  peer {} {} {} {phase}\n",
            a.name.as_deref().unwrap_or("-"),
            a.node,
            a.addr
        ));
    }
    for (addr, r) in &file.peers.rejected {
        out.push_str(&format!(
            "  rejected {} announcements from {addr} (cluster {}): wrong cluster secret or forged\n",
            r.count, r.cluster
        ));
    }
    if let Ok(i) = (DockerCli { runner }).info() {
        out.push_str(&format!(
            "swarm: {} {} (managers {}, nodes {})\n",
            i.state,
            if i.manager { "manager" } else { "worker" },
            i.managers,
            i.nodes
        ));
    }
    if let Ok(c) = std::fs::read_to_string(root.join(keepalived::CONF_PATH.trim_start_matches('/')))
    {
        if let Some(vip) = c
            .lines()
            .skip_while(|l| !l.contains("virtual_ipaddress"))
            .nth(1)
            .and_then(|l| l.split_whitespace().next())
        {
            let ip = vip.split('/').next().unwrap_or(vip);
            let held = runner
                .run(&["ip", "-4", "-o", "addr", "show"])
                .is_ok_and(|o| o.contains(&format!("inet {ip}/")));
            out.push_str(&format!(
                "vip: {vip} {}\n",
                if held {
                    "held by this node"
                } else {
                    "held by another node"
                }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Fake engine answering `info` from a script, then `inactive`.
    struct Scripted(RefCell<Vec<Result<&'static str>>>);

    impl Engine for Scripted {
        fn info(&self) -> Result<SwarmInfo> {
            let next = self.0.borrow_mut().pop().unwrap_or(Ok("inactive"));
            next.map(|state| SwarmInfo {
                state: state.into(),
                ..SwarmInfo::default()
            })
        }
        fn init(&self, _: Ipv4Addr) -> Result<()> {
            Err("not scripted".into())
        }
        fn token(&self, _: bool) -> Result<String> {
            Err("not scripted".into())
        }
        fn join(&self, _: &str, _: &str, _: Ipv4Addr) -> Result<()> {
            Err("not scripted".into())
        }
        fn leave(&self) -> Result<()> {
            Err("not scripted".into())
        }
        fn label(&self, _: &str, _: &[(String, String)]) -> Result<()> {
            Err("not scripted".into())
        }
        fn members(&self) -> Result<Vec<Member>> {
            Err("not scripted".into())
        }
        fn promote(&self, _: &str) -> Result<()> {
            Err("not scripted".into())
        }
    }

    /// Fake engine whose `swarm init` fails `fails` times, as dockerd does
    /// when raft misses its deadline: the swarm is rolled back (`inactive`).
    struct FlakyInit {
        fails: RefCell<u32>,
        failed: RefCell<u32>,
        inits: RefCell<u32>,
    }

    impl Engine for FlakyInit {
        fn info(&self) -> Result<SwarmInfo> {
            let active = *self.inits.borrow() > *self.failed.borrow();
            Ok(SwarmInfo {
                state: if active { "active" } else { "inactive" }.into(),
                ..SwarmInfo::default()
            })
        }
        fn init(&self, _: Ipv4Addr) -> Result<()> {
            *self.inits.borrow_mut() += 1;
            let mut f = self.fails.borrow_mut();
            if *f > 0 {
                *f -= 1;
                *self.failed.borrow_mut() += 1;
                return Err("error updating cluster settings: context deadline exceeded".into());
            }
            Ok(())
        }
        fn token(&self, _: bool) -> Result<String> {
            Err("not scripted".into())
        }
        fn join(&self, _: &str, _: &str, _: Ipv4Addr) -> Result<()> {
            Err("not scripted".into())
        }
        fn leave(&self) -> Result<()> {
            Ok(())
        }
        fn label(&self, _: &str, _: &[(String, String)]) -> Result<()> {
            Err("not scripted".into())
        }
        fn members(&self) -> Result<Vec<Member>> {
            Err("not scripted".into())
        }
        fn promote(&self, _: &str) -> Result<()> {
            Err("not scripted".into())
        }
    }

    #[test]
    fn a_swarm_init_that_missed_its_deadline_is_tried_again_a_bounded_number_of_times() {
        let addr = Ipv4Addr::new(10, 0, 0, 1);
        let e = FlakyInit {
            fails: RefCell::new(2),
            failed: RefCell::new(0),
            inits: RefCell::new(0),
        };
        assert!(init_swarm(&e, addr, Duration::ZERO).is_ok());
        assert_eq!(*e.inits.borrow(), 3);
        let e = FlakyInit {
            fails: RefCell::new(99),
            failed: RefCell::new(0),
            inits: RefCell::new(0),
        };
        let err = init_swarm(&e, addr, Duration::ZERO).expect_err("gives up");
        assert!(err.contains("deadline"), "{err}");
        assert_eq!(*e.inits.borrow(), 4);
    }

    fn member(id: &str, manager: bool, ready: bool) -> Member {
        Member {
            id: id.into(),
            hostname: id.into(),
            manager,
            ready,
            ..Member::default()
        }
    }

    #[test]
    fn managers_are_promoted_to_an_odd_count_of_at_most_three() {
        let cfg = HomecloudConfig::parse(
            "schema = 1\n[cluster]\nname = \"h\"\ndomain = \"home.arpa\"\n[network]\nvip = \"10.0.0.10/24\"\n[[nodes]]\nname = \"c\"\nmac = \"52:54:00:00:00:03\"\n[[nodes]]\nname = \"w\"\nmac = \"52:54:00:00:00:04\"\nroles = [\"worker\"]\n",
            "test.toml",
        )
        .expect("config");
        let p = |m: &[Member]| to_promote(&cfg, m);
        // One manager, one ready worker: wait for a second one.
        assert!(p(&[member("a", true, true), member("b", false, true)]).is_empty());
        // Two ready workers: both at once; listed nodes first.
        assert_eq!(
            p(&[
                member("a", true, true),
                member("b", false, true),
                member("c", false, true),
                member("d", false, true)
            ]),
            ["c", "b"]
        );
        // A worker that is down or whose roles say worker is not a candidate.
        assert!(p(&[
            member("a", true, true),
            member("b", false, false),
            member("w", false, true)
        ])
        .is_empty());
        // Two managers (one was demoted by hand): one more makes three.
        assert_eq!(
            p(&[
                member("a", true, true),
                member("b", true, true),
                member("c", false, true)
            ]),
            ["c"]
        );
        // Three managers: never a fourth.
        let full = [
            member("a", true, true),
            member("b", true, true),
            member("c", true, true),
            member("d", false, true),
        ];
        assert!(p(&full).is_empty());
    }

    fn observed(script: &[Result<&'static str>]) -> bool {
        let mut s = script.to_vec();
        s.reverse();
        let e = Scripted(RefCell::new(s));
        matches!(observe_swarm(&e, Duration::ZERO), Ok(Observed::Done(_)))
    }

    #[test]
    fn a_join_that_ended_in_error_is_told_from_a_member_with_unreachable_managers() {
        let i = |state: &str, id: &str| SwarmInfo {
            state: state.into(),
            node_id: id.into(),
            ..SwarmInfo::default()
        };
        assert!(failed_join(&i("error", "")));
        assert!(!failed_join(&i("error", "abc")));
        assert!(!failed_join(&i("pending", "")));
        let e = Scripted(RefCell::new(vec![Ok("error"), Ok("pending")]));
        assert!(wait_joined(&e).is_err());
        let e = Scripted(RefCell::new(vec![Ok("active"), Ok("pending")]));
        assert!(wait_joined(&e).is_ok());
    }

    #[test]
    fn swarm_postcondition_survives_a_timeout_and_a_passing_pending() {
        assert!(observed(&[Ok("active")]));
        assert!(observed(&[
            Err("timeout".into()),
            Ok("pending"),
            Ok("active")
        ]));
        // Inactive is final at once; endless errors give up.
        assert!(!observed(&[Ok("inactive"), Ok("active")]));
        let errors: Vec<Result<&str>> = (0..10).map(|_| Err("timeout".into())).collect();
        assert!(!observed(&errors));
    }

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
