// SPDX-License-Identifier: Apache-2.0
//! Cluster time (device). Ceph monitors need clocks within 50 ms of each
//! other, boards have no RTC and a home LAN may have no NTP server. Every
//! node answers SNTP on UDP 123 with its own clock; the nodes that join
//! point systemd-timesyncd at the Ceph founder, so the cluster agrees on
//! one clock (the founder's, itself from the Internet when there is one).

use std::net::{Ipv4Addr, UdpSocket};
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
}
