// SPDX-License-Identifier: Apache-2.0
//! `hc-firstboot serve` (device), for the node's lifetime: announces this
//! node, listens to its peers, answers the join channel with the registered
//! answers, looks at dockerd every 3 s (15 s once nothing has changed for
//! a minute) and runs the registered duties.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::channel::{self, Channel};
use super::discovery::{self, Peers, Phase};
use super::duty::{ClusterView, Duty, Schedule};
use super::join::{self, JoinAnswer, JoinRequest};
use super::peers::{me_announcement, run_path, PeerFile};
use super::swarm::{self, SwarmInfo};
use crate::config::HomecloudConfig;
use crate::engine::state::{State, Status};
use crate::engine::{ids, journal, load_config, Ctx, Result, Runner};
use crate::host::files::{write_json, PUBLIC};
use crate::host::net::Lan;
use crate::host::node::uptime_ms;
use crate::secret::ClusterSecret;

/// What the daemon's threads share.
struct Daemon {
    root: PathBuf,
    runner: &'static (dyn Runner + Sync),
    config: HomecloudConfig,
    secret: ClusterSecret,
    lan: Lan,
    answers: &'static [&'static dyn JoinAnswer],
    /// The last look at dockerd.
    swarm: Mutex<Option<SwarmInfo>>,
    /// Uptime (ms) of the last change seen: a different look at dockerd,
    /// a failed one, or a join request.
    changed_ms: AtomicU64,
}

/// The pause between looks at dockerd: quick while the swarm changes, then
/// slower. `GET /info` was about a tenth of an idle emulated dockerd's CPU
/// at one look every 3 s (a Go profile, 3 December).
fn poll_pause(since_change_ms: u64) -> Duration {
    if since_change_ms < 60_000 {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(15)
    }
}

impl Daemon {
    fn cx(&self) -> Ctx<'_> {
        Ctx::with_secret(
            &self.root,
            self.runner,
            self.config.clone(),
            self.secret.clone(),
        )
    }

    fn view(&self) -> ClusterView {
        ClusterView {
            lan: self.lan.clone(),
            swarm: self.swarm.lock().ok().and_then(|g| g.clone()),
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
        State::load(&self.root).is_ok_and(|st| {
            st.steps
                .get("cluster")
                .is_some_and(|r| r.status == Status::Done)
        })
    }

    fn serve_join(&self, stream: std::net::TcpStream) {
        // A joiner is coming: look at dockerd often again.
        self.changed_ms.store(uptime_ms(), Ordering::Relaxed);
        let mut ch = match Channel::accept(stream, &self.secret, Duration::from_secs(120)) {
            Ok(c) => c,
            Err(e) => {
                journal(ids::JOIN_REFUSED, 4, &format!("join channel: {e}"), &[]);
                return;
            }
        };
        let resp = match ch.recv_json::<JoinRequest>() {
            Ok(req) => join::respond(self.answers, &self.cx(), &self.view(), &req),
            Err(e) => join::garbled(e),
        };
        let _ = ch.send_json(&resp);
    }

    /// Looks at dockerd, then runs the after-poll duties in list order.
    fn poll(&self, duties: &[&dyn Duty]) {
        let i = swarm::api_info(self.runner, Duration::from_secs(30)).ok();
        if let Ok(mut g) = self.swarm.lock() {
            if i.is_none() || *g != i {
                self.changed_ms.store(uptime_ms(), Ordering::Relaxed);
            }
            *g = i;
        }
        let (cx, view) = (self.cx(), self.view());
        for d in duties {
            d.tick(&cx, &view);
        }
    }
}

/// `hc-firstboot serve`: runs for the node's lifetime.
pub fn serve(
    root: &Path,
    runner: &'static (dyn Runner + Sync),
    duties: &'static [&'static dyn Duty],
    answers: &'static [&'static dyn JoinAnswer],
) -> Result<()> {
    let config = load_config(root)?;
    let secret = ClusterSecret::load(root)?;
    let cx = Ctx::with_secret(root, runner, config.clone(), secret.clone());
    let lan = loop {
        if let Some(l) = cx.lan()? {
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
        answers,
        swarm: Mutex::new(None),
        changed_ms: AtomicU64::new(uptime_ms()),
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
    // dockerd is looked at on its own thread: a call takes seconds on a
    // slow board (more under emulation), announcements must not wait.
    let after_poll: Vec<&'static dyn Duty> = duties
        .iter()
        .copied()
        .filter(|d| matches!(d.schedule(), Schedule::AfterPoll))
        .collect();
    {
        let d = Arc::clone(&d);
        std::thread::spawn(move || loop {
            d.poll(&after_poll);
            let since = uptime_ms().saturating_sub(d.changed_ms.load(Ordering::Relaxed));
            std::thread::sleep(poll_pause(since));
        });
    }
    for duty in duties {
        if let Schedule::Every(period) = duty.schedule() {
            let d = Arc::clone(&d);
            std::thread::spawn(move || loop {
                duty.tick(&d.cx(), &d.view());
                std::thread::sleep(period);
            });
        }
    }
    announce(&d, &sock, session)
}

/// Announces this node every second and records what it hears.
fn announce(d: &Daemon, sock: &UdpSocket, session: u64) -> Result<()> {
    let secret = &d.secret;
    let cx = d.cx();
    let mut peers = Peers::default();
    let mut seq = 0u64;
    let mut last_send = 0u64;
    let mut buf = [0u8; 4096];
    let started_ms = uptime_ms();
    loop {
        let now = uptime_ms();
        if now.saturating_sub(last_send) >= 1000 {
            seq += 1;
            let current = d.swarm.lock().ok().and_then(|g| g.clone());
            let mut me = me_announcement(&cx, &d.lan, d.phase(current.as_ref()));
            me.session = session;
            me.seq = seq;
            let wire = discovery::seal(&me, secret);
            let _ = sock.send_to(&wire, (d.lan.broadcast, discovery::PORT));
            last_send = now;
            let file = PeerFile {
                written_ms: now,
                started_ms,
                me: Some(me),
                peers: peers.clone(),
            };
            let _ = write_json(&run_path(&d.root, "peers.json"), &file, PUBLIC);
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            match discovery::open(&buf[..n], secret) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerd_is_looked_at_often_only_for_a_minute_after_a_change() {
        assert_eq!(poll_pause(0), Duration::from_secs(3));
        assert_eq!(poll_pause(59_999), Duration::from_secs(3));
        assert_eq!(poll_pause(60_000), Duration::from_secs(15));
    }
}
