// SPDX-License-Identifier: Apache-2.0
//! Cluster time (device). Ceph monitors need clocks within 50 ms of each
//! other, boards have no RTC and a home LAN may have no NTP server. Every
//! node answers SNTP on UDP 123 with its own clock; the nodes that join
//! point systemd-timesyncd at the Ceph founder, so the cluster agrees on
//! one clock (the founder's, itself from the Internet when there is one).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cluster::duty::{ClusterView, Duty, Schedule};
use crate::engine::{Ctx, Result};
use crate::host::files::{write_atomic, PUBLIC};

pub const TIMESYNCD_CONF: &str = "/etc/systemd/timesyncd.conf.d/homecloud.conf";
/// Seconds from 1900 (NTP's era 0) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

fn ntp_ts(t: SystemTime) -> [u8; 8] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = (d.as_secs() + NTP_UNIX_OFFSET) as u32;
    let frac = ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&secs.to_be_bytes());
    b[4..].copy_from_slice(&frac.to_be_bytes());
    b
}

/// The server's reply to one SNTP request, or None for anything that is
/// not a client request. `received` and `now` are this node's clock.
pub fn answer(req: &[u8], received: SystemTime, now: SystemTime) -> Option<[u8; 48]> {
    if req.len() < 48 {
        return None;
    }
    let version = (req[0] >> 3) & 7;
    let mode = req[0] & 7;
    if mode != 3 || !(1..=4).contains(&version) {
        return None;
    }
    let mut r = [0u8; 48];
    // Leap 0 (in sync), the client's version, mode 4 (server).
    r[0] = (version << 3) | 4;
    // Stratum 10: a local clock, as chrony's `local stratum 10`.
    r[1] = 10;
    r[2] = req[2];
    r[3] = 0xEC; // precision ~2^-20 s
                 // Root delay 0; root dispersion ~15 ms (16.16 fixed point).
    r[8..12].copy_from_slice(&0x0000_0400u32.to_be_bytes());
    r[12..16].copy_from_slice(b"LOCL");
    r[16..24].copy_from_slice(&ntp_ts(received));
    // Originate = the client's transmit timestamp.
    r[24..32].copy_from_slice(&req[40..48]);
    r[32..40].copy_from_slice(&ntp_ts(received));
    r[40..48].copy_from_slice(&ntp_ts(now));
    Some(r)
}

/// Answers SNTP requests for the node's lifetime (hc-cluster.service).
pub fn serve() -> Result<()> {
    let sock =
        UdpSocket::bind(("0.0.0.0", 123)).map_err(|e| format!("binding NTP port 123: {e}"))?;
    let mut buf = [0u8; 512];
    loop {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let received = SystemTime::now();
            if let Some(r) = answer(&buf[..n], received, SystemTime::now()) {
                let _ = sock.send_to(&r, from);
            }
        }
    }
}

/// The SNTP server as a daemon duty: started again if it ever stops.
pub struct Server;

impl Duty for Server {
    fn name(&self) -> &'static str {
        "time server"
    }

    fn schedule(&self) -> Schedule {
        Schedule::Every(Duration::from_secs(10))
    }

    fn tick(&self, _cx: &Ctx, _view: &ClusterView) {
        if let Err(e) = serve() {
            eprintln!("{e}");
        }
    }
}

pub fn timesyncd_conf(server: Ipv4Addr) -> String {
    format!("# Written by hc-firstboot: the cluster's clock is the Ceph founder's.\n[Time]\nNTP={server}\n")
}

fn synchronized(cx: &Ctx) -> bool {
    cx.runner
        .run(&["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
        .is_ok_and(|s| s.trim() == "yes")
}

/// Points timesyncd at `server` and waits (bounded) for a first sync, so
/// a monitor starts with the cluster's time. Returns what to report.
pub fn sync_with(cx: &Ctx, server: Ipv4Addr, limit: Duration) -> Result<String> {
    let want = timesyncd_conf(server);
    let p = cx.path(TIMESYNCD_CONF);
    if std::fs::read_to_string(&p).ok().as_deref() != Some(want.as_str()) {
        write_atomic(&p, want.as_bytes(), PUBLIC)?;
        cx.runner
            .run(&["systemctl", "restart", "systemd-timesyncd"])?;
    }
    let t = Instant::now();
    while t.elapsed() < limit {
        if synchronized(cx) {
            return Ok(format!("synchronized with {server}"));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(format!(
        "not synchronized with {server} after {}s (ceph reports skew as MON_CLOCK_SKEW)",
        limit.as_secs()
    ))
}

/// NTP timestamp (8 bytes) as seconds since the Unix epoch.
fn unix_secs(b: &[u8]) -> f64 {
    let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let frac = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    f64::from(secs) - NTP_UNIX_OFFSET as f64 + f64::from(frac) / 4_294_967_296.0
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// One SNTP exchange with `server`: (offset, delay) in seconds, the offset
/// positive when the server is ahead of this node. None when it does not
/// answer within `timeout` or answers something else.
pub fn query(server: SocketAddr, timeout: Duration) -> Option<(f64, f64)> {
    let sock = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    sock.set_read_timeout(Some(timeout)).ok()?;
    let mut req = [0u8; 48];
    req[0] = (4 << 3) | 3;
    let sent = SystemTime::now();
    req[40..48].copy_from_slice(&ntp_ts(sent));
    let t1 = unix_secs(&req[40..48]);
    sock.send_to(&req, server).ok()?;
    let mut r = [0u8; 64];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let (n, from) = sock.recv_from(&mut r).ok()?;
        let t4 = now_secs();
        // Ours, a server reply, and the answer to this request.
        if from != server || n < 48 || r[0] & 7 != 4 || r[24..32] != req[40..48] {
            continue;
        }
        let (t2, t3) = (unix_secs(&r[32..40]), unix_secs(&r[40..48]));
        return Some((((t2 - t1) + (t3 - t4)) / 2.0, (t4 - t1) - (t3 - t2)));
    }
    None
}

/// The offset to step by, if any: the time source's when it answered and
/// is not this node, else the median of the other answers. Small offsets
/// are left to timesyncd.
pub fn pick_offset(source: Option<f64>, others: &[f64]) -> Option<f64> {
    let o = match source {
        Some(o) => o,
        None if others.is_empty() => return None,
        None => {
            let mut v = others.to_vec();
            v.sort_by(f64::total_cmp);
            let m = v.len() / 2;
            if v.len() % 2 == 0 {
                (v[m - 1] + v[m]) / 2.0
            } else {
                v[m]
            }
        }
    };
    (o.abs() > STEP_ABOVE).then_some(o)
}

/// Below this, timesyncd's slew is fine; above it (up to 0.4 s) timesyncd
/// slews at 500 ppm, minutes during which Ceph's monitors (50 ms allowed)
/// report MON_CLOCK_SKEW.
const STEP_ABOVE: f64 = 0.02;

/// The best of three exchanges (least delay), or None.
fn best_of_three(server: Ipv4Addr) -> Option<f64> {
    (0..3)
        .filter_map(|_| query(SocketAddr::from((server, 123)), Duration::from_secs(1)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(o, _)| o)
}

fn is_local(a: Ipv4Addr) -> bool {
    UdpSocket::bind((a, 0)).is_ok()
}

/// Moves CLOCK_REALTIME by `off` seconds in one step.
// libc has no safe wrapper; both calls get pointers to this stack frame.
#[allow(unsafe_code)]
fn step_clock(off: f64) -> Result<()> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
        return Err(format!(
            "clock_gettime: {}",
            std::io::Error::last_os_error()
        ));
    }
    let ns = i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec) + (off * 1e9) as i128;
    let to = libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as libc::c_long,
    };
    // SAFETY: `to` is a valid timespec with 0 <= tv_nsec < 1e9.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &to) } != 0 {
        return Err(format!(
            "clock_settime: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Steps this node's clock to the cluster's before a monitor starts
/// (ceph-mon's ExecStartPre): a board without an RTC, or a QEMU guest
/// whose RTC counts whole seconds, comes back up to a second off, and
/// timesyncd would slew that for minutes. The time source itself steps to
/// the others' median, so a returning founder joins their clock.
pub fn step_to_cluster(source: Option<Ipv4Addr>, peers: &[Ipv4Addr]) -> Result<String> {
    let source = source.filter(|a| !is_local(*a));
    let others: Vec<Ipv4Addr> = peers
        .iter()
        .copied()
        .filter(|a| Some(*a) != source && !is_local(*a))
        .collect();
    // The link may come up just after network-online (--any): ask again
    // for a while before starting the monitor on the local clock.
    let until = Instant::now() + Duration::from_secs(15);
    let (from_source, answers) = loop {
        let from_source = source.and_then(best_of_three);
        let answers: Vec<f64> = if from_source.is_some() {
            Vec::new()
        } else {
            others.iter().filter_map(|a| best_of_three(*a)).collect()
        };
        let nobody = source.is_none() && others.is_empty();
        if from_source.is_some() || !answers.is_empty() || nobody || Instant::now() >= until {
            break (from_source, answers);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let Some(off) = pick_offset(from_source, &answers) else {
        return Ok(match (from_source, answers.len()) {
            (Some(o), _) => format!("clock within {:.3} s of the time source: not stepped", o),
            (None, 0) if source.is_none() && others.is_empty() => {
                "no other node known to ask for the time: clock not stepped".into()
            }
            (None, 0) => "no other node answered SNTP: clock not stepped".into(),
            (None, n) => format!("clock agrees with {n} node(s): not stepped"),
        });
    };
    step_clock(off)?;
    Ok(format!(
        "clock stepped by {off:+.3} s to {}",
        if from_source.is_some() {
            "the time source's".to_string()
        } else {
            format!("the median of {} node(s)", answers.len())
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_request_gets_a_server_reply_with_its_timestamps() {
        let mut req = [0u8; 48];
        req[0] = (4 << 3) | 3;
        req[40..48].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000);
        let r = answer(&req, t, t + Duration::from_millis(1)).expect("reply");
        assert_eq!(r[0], (4 << 3) | 4, "leap 0, version 4, mode 4");
        assert_eq!(r[1], 10);
        assert_eq!(&r[24..32], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let secs = u32::from_be_bytes([r[32], r[33], r[34], r[35]]);
        assert_eq!(u64::from(secs), 1_700_000_000 + NTP_UNIX_OFFSET);
        let frac = u32::from_be_bytes([r[36], r[37], r[38], r[39]]);
        assert_eq!(frac, 1 << 31, "half a second");
        assert!(r[40..48] > r[32..40], "transmit after receive");
    }

    #[test]
    fn anything_but_a_client_request_is_ignored() {
        let mut req = [0u8; 48];
        req[0] = (4 << 3) | 4; // a server reply
        assert!(answer(&req, SystemTime::now(), SystemTime::now()).is_none());
        assert!(answer(&[0x23; 20], SystemTime::now(), SystemTime::now()).is_none());
    }

    #[test]
    fn timesyncd_is_pointed_at_the_founder() {
        assert!(timesyncd_conf(Ipv4Addr::new(10, 0, 0, 11)).contains("\nNTP=10.0.0.11\n"));
    }

    /// A real SNTP exchange on loopback with a server whose clock is 5 s
    /// ahead of this one.
    #[test]
    fn a_query_measures_the_offset_of_a_server_ahead() {
        let srv = UdpSocket::bind(("127.0.0.1", 0)).expect("bind");
        let addr = srv.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = srv.recv_from(&mut buf).expect("recv");
            let ahead = SystemTime::now() + Duration::from_secs(5);
            let r = answer(&buf[..n], ahead, ahead).expect("a request");
            srv.send_to(&r, from).expect("send");
        });
        let (off, delay) = query(addr, Duration::from_secs(5)).expect("an answer");
        t.join().expect("server");
        assert!((off - 5.0).abs() < 0.5, "offset {off}");
        assert!((0.0..1.0).contains(&delay), "delay {delay}");
    }

    #[test]
    fn a_silent_server_gives_no_offset() {
        let srv = UdpSocket::bind(("127.0.0.1", 0)).expect("bind");
        let addr = srv.local_addr().expect("addr");
        assert!(query(addr, Duration::from_millis(200)).is_none());
    }

    #[test]
    fn the_time_source_wins_else_the_median_and_small_offsets_are_left() {
        assert_eq!(pick_offset(Some(0.7), &[-3.0, -3.0]), Some(0.7));
        assert_eq!(pick_offset(Some(0.01), &[]), None, "timesyncd slews that");
        assert_eq!(pick_offset(None, &[0.3, 0.5, 9.0]), Some(0.5));
        assert_eq!(pick_offset(None, &[-0.4, -0.6]), Some(-0.5));
        assert_eq!(pick_offset(None, &[]), None);
    }

    #[test]
    fn this_node_is_never_its_own_peer() {
        assert!(is_local(Ipv4Addr::LOCALHOST));
        assert!(
            !is_local(Ipv4Addr::new(192, 0, 2, 1)),
            "TEST-NET-1 is nobody's"
        );
    }
}
