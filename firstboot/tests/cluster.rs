// SPDX-License-Identifier: Apache-2.0
//! The cluster steps' state machine against a fake engine (a recording
//! dockerd API/`systemctl`/`ip` runner over a temporary root): a power cut right
//! after each side effect, then a rerun, repeats no side effect.

use std::cell::RefCell;
use std::path::Path;

use hc_firstboot::cluster::form::Cluster;
use hc_firstboot::cluster::network::Network;
use hc_firstboot::engine::{self, Step};
use hc_firstboot::exec::RealRunner;
use hc_firstboot::keepalived::Keepalived;
use hc_firstboot::secret::ClusterSecret;

mod support;
use support::{Fake, World};

/// Fake dockerd + systemd + iproute2.
struct Docker {
    swarm_active: RefCell<bool>,
    keepalived_active: RefCell<bool>,
}

impl World for Docker {
    fn run(&self, fake: &Fake<Self>, argv: &[&str]) -> Result<String, String> {
        match argv {
            ["GET", "/info"] => Ok(if *self.swarm_active.borrow() {
                r#"{"Name":"node1","Swarm":{"NodeID":"n1","LocalNodeState":"active","ControlAvailable":true,"Managers":1,"Nodes":1,"Cluster":{"ID":"sw1"}}}"#.into()
            } else {
                r#"{"Name":"node1","Swarm":{"NodeID":"","LocalNodeState":"inactive","ControlAvailable":false}}"#.into()
            }),
            ["POST", "/swarm/init", ..] => {
                *self.swarm_active.borrow_mut() = true;
                fake.side_effect("swarm init")
            }
            ["ip", "-4", "-o", "addr", "show", ..] => {
                Ok("2: enp0s1    inet 10.77.0.101/24 brd 10.77.0.255 scope global enp0s1\n".into())
            }
            ["systemctl", "is-active", "keepalived"] => {
                if *self.keepalived_active.borrow() {
                    Ok("active\n".into())
                } else {
                    Err("inactive".into())
                }
            }
            ["systemctl", "restart", "keepalived"] => {
                *self.keepalived_active.borrow_mut() = true;
                fake.side_effect("keepalived restart")
            }
            _ => Ok(String::new()),
        }
    }
}

fn w(root: &Path, p: &str, data: &str) {
    let f = root.join(p);
    std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
    std::fs::write(f, data).expect("write");
}

fn device(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    w(
        root,
        "proc/net/route",
        "Iface\tDestination\tGateway\nenp0s1\t00000000\t0100000A\n",
    );
    w(root, "sys/class/net/enp0s1/address", "52:54:00:12:34:01\n");
    w(root, "proc/sys/kernel/hostname", "node1");
    w(
        root,
        "boot/hcboot/homecloud.toml",
        "schema = 1\n[cluster]\nname = \"home\"\ndomain = \"home.arpa\"\n[network]\nvip = \"10.77.0.10/24\"\n[[nodes]]\nname = \"node1\"\nmac = \"52:54:00:12:34:01\"\n",
    );
    let key = root.join("etc/hc-image/cluster.key");
    w(
        root,
        "etc/hc-image/cluster.key",
        &ClusterSecret::from_bytes([9; 32]).to_file_text(),
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::create_dir_all(root.join("var/lib/hc-firstboot")).expect("mkdir");
}

/// Stands in for `hc-firstboot serve`: a fresh, empty peer list (alone on
/// the LAN), rewritten as the daemon does, until `stop` is set.
fn lone_daemon(
    root: &Path,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let file = root.join("run/hc-firstboot/peers.json");
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let now = hc_firstboot::host::node::uptime_ms();
            let text = format!("{{\"written_ms\": {now}, \"started_ms\": 0, \"me\": null, \"peers\": {{\"peers\": {{}}, \"rejected\": {{}}}}}}");
            let _ = std::fs::create_dir_all(file.parent().expect("parent"));
            let tmp = file.with_extension("tmp");
            let _ = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &file));
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    })
}

#[test]
fn power_cut_after_each_side_effect_repeats_none() {
    // Alone on the LAN: elect itself after the (shortened) window.
    std::env::set_var("HC_DISCOVERY_WINDOW", "0");
    std::env::set_var("HC_DOCKER_TIMEOUT", "3");
    for crash in [None, Some("swarm init"), Some("keepalived restart")] {
        let d = tempfile::tempdir().expect("tmp");
        device(d.path());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let daemon = lone_daemon(d.path(), stop.clone());
        let fake = Fake::new(Docker {
            swarm_active: RefCell::new(false),
            keepalived_active: RefCell::new(false),
        })
        .cut_power_after(crash);
        let steps: [&dyn Step; 3] = [&Network, &Cluster, &Keepalived];
        let first = engine::run(d.path(), &fake, &steps);
        if crash.is_some() {
            assert!(first.is_err(), "{crash:?}: the cut run must not converge");
            let status = engine::status(d.path(), &RealRunner, &[]);
            assert!(status.contains("power cut"), "{status}");
            let again = &fake;
            again.power_back();
            engine::run(d.path(), again, &steps).expect("rerun converges");
            assert_eq!(
                again.count("POST /swarm/init"),
                1,
                "{crash:?}: {:?}",
                again.calls()
            );
            assert_eq!(again.count("POST /swarm/join"), 0);
            let conf = std::fs::read_to_string(d.path().join("etc/keepalived/keepalived.conf"))
                .expect("keepalived.conf");
            assert!(conf.contains("10.77.0.10/24 dev enp0s1"), "{conf}");
            // A third run finds everything done and touches nothing.
            let before = again.calls().len();
            engine::run(d.path(), again, &steps).expect("third run");
            let later: Vec<String> = again.calls()[before..].to_vec();
            assert!(
                later
                    .iter()
                    .all(|c| !c.contains("init") && !c.contains("restart")),
                "{later:?}"
            );
        } else {
            first.expect("clean run converges");
            assert_eq!(fake.count("POST /swarm/init"), 1);
            let status = engine::status(d.path(), &RealRunner, &[]);
            assert!(status.contains("step cluster: done"), "{status}");
            assert!(status.contains("swarm: sw1"), "{status}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        daemon.join().expect("daemon thread");
    }
}
