// SPDX-License-Identifier: Apache-2.0
//! The `cluster` step: discovery, election, then `swarm init` or a join
//! through a member, until this node is in exactly one swarm.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::admit::{SwarmGrant, TOPIC as SWARM};
use super::discovery::{decide, Announcement, Decision, Phase};
use super::join::{ask, JoinError, JoinRequest};
use super::peers::{me_announcement, set_phase, PeerFile, FOUNDER, LIVE_MS, MEMBER_MS};
use super::swarm::{DockerApi, Engine, SwarmInfo};
use crate::engine::{failpoint, ids, journal, Ctx, Observed, Result, Step};
use crate::host::files::{write_atomic, PUBLIC};
use crate::host::node::{current_hostname, env_secs, uptime_ms};
use crate::identity::ASSIGNED_NAME;

/// How long a node listens before electing; nodes powered on within this
/// window of each other form one cluster in one step.
fn window() -> Duration {
    env_secs("HC_DISCOVERY_WINDOW", 30)
}

pub struct Cluster;

/// Whether listening may end: after the window, or at once when every node
/// homecloud.toml lists is heard (nobody else to wait for; the window is
/// for unlisted cards and for cards powered on a little later).
fn heard_enough(
    listened_ms: u64,
    window_ms: u64,
    listed: &[&str],
    me: &str,
    live: &[&Announcement],
) -> bool {
    listened_ms >= window_ms
        || (!listed.is_empty()
            && listed.iter().all(|mac| {
                mac.eq_ignore_ascii_case(me)
                    || live.iter().any(|a| a.node.eq_ignore_ascii_case(mac))
            }))
}

fn wait_docker(engine: &dyn Engine) -> Result<SwarmInfo> {
    let deadline = std::time::Instant::now() + env_secs("HC_DOCKER_TIMEOUT", 900);
    loop {
        match engine.info() {
            Ok(i) => return Ok(i),
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
    let mut f = BTreeMap::from([
        (
            "role".into(),
            if i.manager { "manager" } else { "worker" }.into(),
        ),
        ("node id".into(), i.node_id.clone()),
    ]);
    // dockerd tells only managers the swarm's id.
    if !i.cluster_id.is_empty() {
        f.insert("swarm".into(), i.cluster_id.clone());
    }
    f
}

fn adopt_name(cx: &Ctx, mac: &str, name: &str) -> Result<()> {
    // Listed nodes keep their configured name; an assigned one is kept once.
    if cx.path(ASSIGNED_NAME).is_file() || cx.config.node_by_mac(mac).is_some() {
        return Ok(());
    }
    let line = format!("{name}\n");
    write_atomic(&cx.path(ASSIGNED_NAME), line.as_bytes(), PUBLIC)?;
    write_atomic(&cx.path("/etc/hostname"), line.as_bytes(), PUBLIC)?;
    let _ = std::fs::write(cx.path("/proc/sys/kernel/hostname"), name.as_bytes());
    Ok(())
}

impl Step for Cluster {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        observe_swarm(&DockerApi { runner: cx.runner }, Duration::from_secs(3))
    }

    fn apply(&self, cx: &Ctx) -> Result<()> {
        let engine = DockerApi { runner: cx.runner };
        converge_swarm(cx, &engine)
    }

    /// What this node hears and holds right now.
    fn status(&self, cx: &Ctx) -> Vec<String> {
        let mut out = Vec::new();
        let file = PeerFile::load(&cx.root);
        if let Some(me) = &file.me {
            out.push(format!(
                "cluster: {} (this node {} {})",
                me.cluster, me.node, me.addr
            ));
        }
        for a in file.peers.live(uptime_ms(), LIVE_MS) {
            let phase = match &a.phase {
                Phase::Discovering => "discovering",
                Phase::Bootstrapping => "bootstrapping",
                Phase::Member { serves: true, .. } => "member (manager)",
                Phase::Member { .. } => "member",
            };
            out.push(format!(
                "  peer {} {} {} {phase}",
                a.name.as_deref().unwrap_or("-"),
                a.node,
                a.addr
            ));
        }
        for (addr, r) in &file.peers.rejected {
            out.push(format!(
                "  rejected {} announcements from {addr} (cluster {}): wrong cluster secret or forged",
                r.count, r.cluster
            ));
        }
        let engine = DockerApi { runner: cx.runner };
        if let Ok(i) = engine.info() {
            out.push(format!(
                "swarm: {} {} (managers {}, nodes {})",
                i.state,
                if i.manager { "manager" } else { "worker" },
                i.managers,
                i.nodes
            ));
            // Only managers know the swarm's id and its members (what
            // `docker info` and `docker node ls` show, without a `docker`
            // process).
            if i.manager && !i.cluster_id.is_empty() {
                out.push(format!("  swarm id: {}", i.cluster_id));
            }
            if i.manager {
                for m in engine.members().unwrap_or_default() {
                    out.push(member_line(&m));
                }
            }
        }
        out
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

/// One swarm member for `hc status`: name (`-` for a join that never
/// completed), `ready` or `down`, role.
pub fn member_line(m: &super::swarm::Member) -> String {
    let role = match (m.manager, m.pending) {
        (true, _) if m.leader => "manager leader",
        (true, _) => "manager",
        (false, true) => "manager-to-be",
        (false, false) => "worker",
    };
    format!(
        "  swarm node {} {} {role}{}",
        if m.hostname.is_empty() {
            "-"
        } else {
            &m.hostname
        },
        if m.ready { "ready" } else { "down" },
        if m.me { " (this node)" } else { "" }
    )
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

fn swarm_request(l: &crate::host::net::Lan) -> JoinRequest {
    JoinRequest {
        node: l.mac.clone(),
        addr: l.addr,
        topic: SWARM.into(),
    }
}

/// An ignored node is tried again after this long.
pub(super) const IGNORE_MS: u64 = 600_000;

/// Discovery, election and bootstrap or join, until this node is in a swarm.
pub fn converge_swarm(cx: &Ctx, engine: &dyn Engine) -> Result<()> {
    let secret = cx.secret()?;
    let l = cx
        .lan()?
        .ok_or("no LAN address (the network step should have waited for one)")?;
    let mut info = wait_docker(engine)?;
    // Docker names the swarm node after the hostname it saw when it started.
    if info.hostname != current_hostname(&cx.root) && !current_hostname(&cx.root).is_empty() {
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
    set_phase(&cx.root, "discovering")?;
    let started = uptime_ms();
    let mut me = me_announcement(cx, &l, Phase::Discovering);
    let listed: Vec<&str> = cx.config.nodes.iter().map(|n| n.mac.as_str()).collect();
    let mut ignored: BTreeMap<String, u64> = BTreeMap::new();
    let mut waiting: Option<(String, u64)> = None;
    let mut join_failures = 0u32;
    let mut not_yet = 0u32;
    loop {
        let now = uptime_ms();
        ignored.retain(|_, at| now.saturating_sub(*at) < IGNORE_MS);
        let file = PeerFile::load(&cx.root);
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
        let window_over = heard_enough(
            now.saturating_sub(listening_since),
            window().as_millis() as u64,
            &listed,
            &l.mac,
            &live,
        );
        if window_over && live.iter().all(|a| a.node == l.mac) {
            // Only announcements we cannot authenticate: say so instead of
            // forming a rival cluster next to the real one.
            if let Some((addr, _)) = file.peers.rejected.iter().find(|(_, r)| {
                r.cluster == cx.config.cluster.name && now.saturating_sub(r.at_ms) < LIVE_MS
            }) {
                if let Ok(a) = addr.parse::<Ipv4Addr>() {
                    if let Err(JoinError::WrongSecret(e)) =
                        ask::<SwarmGrant>(secret, a, &swarm_request(&l))
                    {
                        return Err(format!(
                            "{e}; nodes of cluster {} at {addr} use another cluster secret, so this node stays out",
                            cx.config.cluster.name
                        ));
                    }
                }
            }
        }
        // Before deciding: a founder that decides at once (every listed
        // node heard) still tells the console what it heard.
        crate::engine::progress::show(
            &cx.root,
            &format!(
                "hc-image first boot: cluster: {} peer(s) heard, {}",
                live.len(),
                match &waiting {
                    Some((n, _)) => format!("waiting for {n} to found the swarm"),
                    None => "deciding who founds the swarm".into(),
                }
            ),
        );
        match decide(&me, &live, window_over) {
            Decision::Bootstrap if me.phase == Phase::Bootstrapping => {
                journal(
                    ids::SWARM_BOOTSTRAP,
                    5,
                    &format!("elected bootstrap node: creating the swarm on {}", l.addr),
                    &[],
                );
                // Before init: whoever creates the swarm creates Ceph too.
                write_atomic(&cx.path(FOUNDER), b"", PUBLIC)?;
                init_swarm(engine, l.addr, Duration::from_secs(5))?;
                failpoint("cluster:after-init");
                return wait_active(engine);
            }
            Decision::Bootstrap => {
                // Announce the intent, then decide again once everyone heard it.
                set_phase(&cx.root, "bootstrapping")?;
                me.phase = Phase::Bootstrapping;
                std::thread::sleep(Duration::from_secs(6));
                continue;
            }
            Decision::Join { node, addr } => {
                match ask::<SwarmGrant>(secret, addr, &swarm_request(&l)) {
                    Ok(SwarmGrant {
                        name,
                        token,
                        remote,
                        swarm,
                    }) => {
                        adopt_name(cx, &l.mac, &name)?;
                        if info.hostname != current_hostname(&cx.root) {
                            cx.runner.run(&["systemctl", "restart", "docker"])?;
                            wait_docker(engine)?;
                        }
                        // A joiner founds nothing (it may have meant to, once).
                        let f = cx.path(FOUNDER);
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
                    Err(JoinError::Refused(message)) => {
                        join_failures = 0;
                        not_yet += 1;
                        eprintln!("join through {addr} ({node}) refused for now: {message}");
                        if not_yet > 600 {
                            return Err(format!(
                                "{addr} kept answering \"{message}\" for 10 minutes"
                            ));
                        }
                    }
                    Err(JoinError::WrongSecret(e)) => return Err(e),
                    Err(JoinError::Failed(e)) => {
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
                    set_phase(&cx.root, "discovering")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    use crate::cluster::swarm::Member;

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
    fn listening_ends_early_only_when_every_listed_node_is_heard() {
        let ann = |node: &str| Announcement {
            cluster: "home".into(),
            node: node.into(),
            name: None,
            addr: Ipv4Addr::new(10, 0, 0, 1),
            order: 0,
            phase: Phase::Discovering,
            session: 0,
            seq: 0,
        };
        let (a, b, c) = (
            "52:54:00:00:00:01",
            "52:54:00:00:00:02",
            "52:54:00:00:00:03",
        );
        let (hb, hc) = (ann(b), ann(&c.to_uppercase()));
        let listed = [a, b, c];
        assert!(!heard_enough(1_000, 30_000, &listed, a, &[&hb]));
        assert!(heard_enough(1_000, 30_000, &listed, a, &[&hb, &hc]));
        assert!(heard_enough(30_000, 30_000, &listed, a, &[]));
        // No list: only the window ends it.
        assert!(!heard_enough(1_000, 30_000, &[], a, &[&hb, &hc]));
    }

    #[test]
    fn members_are_listed_by_name_state_and_role() {
        use super::super::swarm::Member;
        let m = Member {
            id: "a".into(),
            hostname: "node1".into(),
            me: true,
            manager: true,
            leader: true,
            ready: true,
            pending: false,
        };
        assert_eq!(
            member_line(&m),
            "  swarm node node1 ready manager leader (this node)"
        );
        let left = Member {
            id: "b".into(),
            ..Member::default()
        };
        assert_eq!(member_line(&left), "  swarm node - down worker");
        let halfway = Member {
            hostname: "node3".into(),
            pending: true,
            ready: true,
            ..Member::default()
        };
        assert_eq!(
            member_line(&halfway),
            "  swarm node node3 ready manager-to-be"
        );
    }
}
