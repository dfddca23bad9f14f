// SPDX-License-Identifier: Apache-2.0
//! Engine test on the host: three nodes, each a network namespace on one
//! bridge with its own real `dockerd` (own data root and socket) and real
//! `keepalived`, run the agent's network, cluster and keepalived steps and
//! the `serve` daemon, as on a device. Only `systemctl` is a test shim (it
//! starts keepalived in the node's namespace); everything else is real.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hc_firstboot::secret::ClusterSecret;
use hc_qemu::{Lan, LanHost};

const AGENT: &str = env!("CARGO_BIN_EXE_hc-firstboot");

fn need(tool: &str, pkg: &str) {
    assert!(
        hc_qemu::lan::tool(tool, pkg).is_ok(),
        "{tool} is missing: apt-get install {pkg} (or run .ci/install-deps)"
    );
}

fn w(p: &Path, data: &str, mode: u32) {
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, data).expect("write");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

struct Node {
    name: String,
    host: LanHost,
    dir: PathBuf,
    root: PathBuf,
    dockerd: Child,
    serve: Option<Child>,
}

impl Node {
    fn sock(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.display())
    }

    /// A command inside this node's namespace with its environment.
    fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = self.host.command(argv);
        c.env("HC_ROOT", &self.root)
            .env("DOCKER_HOST", self.sock())
            .env("HC_DISCOVERY_WINDOW", "8")
            .env("HC_DOCKER_TIMEOUT", "120")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.dir.join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        c
    }

    fn out(&self, argv: &[&str]) -> String {
        let o = self.cmd(argv).output().expect("run");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn holds(&self, vip: Ipv4Addr) -> bool {
        self.out(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
            .contains(&format!("inet {vip}/"))
    }

    fn keepalived_pid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("keepalived.pid"))
            .ok()
            .map(|s| s.trim().to_string())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut s) = self.serve.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        if let Some(pid) = self.keepalived_pid() {
            let _ = Command::new("kill").arg(&pid).status();
        }
        let _ = self.dockerd.kill();
        let _ = self.dockerd.wait();
        // dockerd's containerd child and mounts under the data root.
        let _ = Command::new("pkill")
            .args(["-f", &self.dir.display().to_string()])
            .status();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.display()
            ))
            .status();
    }
}

fn node(lan: &Lan, base: &Path, k: u8, config: &str, secret: &ClusterSecret) -> Node {
    let name = format!("n{k}");
    let mac = format!("52:54:00:77:00:{k:02x}");
    let host = lan.dhcp_client(&name, &mac).expect("namespace");
    let addr = lan.addr(10 + k);
    let st = host
        .command(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"])
        .status()
        .expect("ip");
    assert!(st.success());
    let dir = base.join(&name);
    let root = dir.join("root");
    w(&root.join("boot/hcboot/homecloud.toml"), config, 0o644);
    w(
        &root.join("etc/hc-image/cluster.key"),
        &secret.to_file_text(),
        0o600,
    );
    w(&root.join("proc/sys/kernel/hostname"), &name, 0o644);
    std::fs::create_dir_all(root.join("var/lib/hc-firstboot")).expect("mkdir");
    // The namespace's own /proc/net and /sys (ip netns exec remounts /sys).
    std::os::unix::fs::symlink("/proc/self/net", root.join("proc/net")).expect("link");
    std::os::unix::fs::symlink("/sys", root.join("sys")).expect("link");
    // systemctl shim: keepalived as a daemon of this namespace.
    let conf = root.join("etc/keepalived/keepalived.conf");
    let d = dir.display();
    w(
        &dir.join("bin/systemctl"),
        &format!(
            "#!/bin/sh\nset -e\npid={d}/keepalived.pid\ncase \"$1 $2\" in\n\
'restart keepalived') [ -f $pid ] && kill $(cat $pid) 2>/dev/null; sleep 0.5; keepalived -f {conf} -p $pid -r {d}/vrrp.pid -c {d}/checkers.pid -i {name} ;;\n\
'reload keepalived') kill -HUP $(cat $pid) ;;\n\
'is-active keepalived') kill -0 $(cat $pid 2>/dev/null) 2>/dev/null ;;\n\
*) echo \"systemctl shim: $* not supported\" >&2; exit 1 ;;\nesac\n",
            conf = conf.display()
        ),
        0o755,
    );
    let log = std::fs::File::create(dir.join("dockerd.log")).expect("log");
    // nsenter, not `ip netns exec`: dockerd needs the host's cgroup mounts
    // under /sys, which `ip netns exec` hides behind a fresh sysfs.
    let dockerd = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", host.netns()))
        .args([
            "unshare",
            "-u",
            "sh",
            "-c",
            format!(
                "hostname {name} && exec dockerd --data-root {d}/data --exec-root {d}/exec --pidfile {d}/docker.pid -H unix://{d}/docker.sock --bridge=none --iptables=false"
            ).as_str(),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("dockerd");
    Node {
        name,
        host,
        dir,
        root,
        dockerd,
        serve: None,
    }
}

#[test]
fn three_nodes_form_one_swarm_and_the_vip_fails_over() {
    need("ip", "iproute2");
    need("dnsmasq", "dnsmasq-base");
    need("dockerd", "docker.io");
    need("keepalived", "keepalived");
    need("unshare", "util-linux");
    // keepalived refuses check scripts under world-writable directories.
    let base = PathBuf::from(format!("/run/hc-engine-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("mkdir");
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let lan = Lan::create(
        &format!("eng{}", std::process::id()),
        Ipv4Addr::new(10, 79, 0, 0),
    )
    .expect("lan");
    let vip = lan.addr(10);
    let secret = ClusterSecret::from_bytes([42; 32]);
    let config = format!(
        "schema = 1\n[cluster]\nname = \"enginetest\"\ndomain = \"home.arpa\"\n[network]\nvip = \"{vip}/24\"\n{}",
        (1..=3)
            .map(|k| format!(
                "[[nodes]]\nname = \"n{k}\"\nmac = \"52:54:00:77:00:{k:02x}\"\n{}",
                if k == 3 { "roles = [\"manager\", \"ingress\"]\n" } else { "" }
            ))
            .collect::<String>()
    );
    let mut nodes: Vec<Node> = (1..=3)
        .map(|k| node(&lan, &base, k, &config, &secret))
        .collect();
    for n in &mut nodes {
        let log = std::fs::File::create(n.dir.join("serve.log")).expect("log");
        n.serve = Some(
            n.cmd(&[AGENT, "serve"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("serve"),
        );
    }
    let t0 = Instant::now();
    let runs: Vec<Child> = nodes
        .iter()
        .map(|n| {
            let log = std::fs::File::create(n.dir.join("run.log")).expect("log");
            n.cmd(&[AGENT, "run"])
                .env("HC_STEPS", "network,cluster,keepalived")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("run")
        })
        .collect();
    for (mut r, n) in runs.into_iter().zip(&nodes) {
        let st = r.wait().expect("wait");
        let log = std::fs::read_to_string(n.dir.join("run.log")).unwrap_or_default();
        let dl = std::fs::read_to_string(n.dir.join("dockerd.log")).unwrap_or_default();
        assert!(
            st.success(),
            "{}: agent run failed: {log}\ndockerd tail: {}",
            n.name,
            &dl[dl.len().saturating_sub(2000)..]
        );
    }
    println!(
        "three nodes converged in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    // One swarm; every node joined as a worker and the leader promoted two:
    // three managers, and every node agrees.
    let t1 = Instant::now();
    let mut ids = Vec::new();
    for n in &nodes {
        loop {
            let ls = n.out(&[
                "docker",
                "node",
                "ls",
                "--format",
                "{{.Hostname}} {{.ManagerStatus}}",
            ]);
            let mut lines: Vec<&str> = ls.lines().collect();
            lines.sort();
            let managers = lines
                .iter()
                .filter(|l| l.contains("Leader") || l.contains("Reachable"))
                .count();
            if lines.len() == 3 && managers == 3 {
                break;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(120),
                "{}: not three managers: {ls}",
                n.name
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        ids.push(n.out(&["docker", "info", "--format", "{{.Swarm.Cluster.ID}}"]));
        let status = n.out(&[AGENT, "status"]);
        assert!(status.contains("step cluster: done"), "{status}");
    }
    println!(
        "two workers promoted to managers {:.1}s after convergence",
        t1.elapsed().as_secs_f64()
    );
    assert!(
        ids.iter().all(|i| *i == ids[0] && !i.trim().is_empty()),
        "{ids:?}"
    );
    // Managers label every node with its roles (n3 names its own).
    let want = "n1 storage,ingress\nn2 storage,ingress\nn3 ingress";
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ids = nodes[0].out(&["docker", "node", "ls", "-q"]);
        let mut argv = vec![
            "docker",
            "node",
            "inspect",
            "--format",
            "{{.Description.Hostname}} {{range $k, $v := .Spec.Labels}}{{$k}},{{end}}",
        ];
        argv.extend(ids.split_whitespace());
        let got = nodes[0].out(&argv);
        let mut lines: Vec<String> = got
            .lines()
            .map(|l| {
                let (host, labels) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
                // "homecloud.role.ingress,homecloud.role.storage," -> roles, storage first
                let mut roles: Vec<&str> = labels
                    .split(',')
                    .filter_map(|x| x.strip_prefix("homecloud.role."))
                    .collect();
                roles.sort_by_key(|r| *r != "storage");
                format!("{host} {}", roles.join(","))
            })
            .collect();
        lines.sort();
        if lines.join("\n") == want {
            break;
        }
        assert!(Instant::now() < deadline, "node labels: {lines:?}");
        std::thread::sleep(Duration::from_secs(2));
    }
    // The VIP answers from a client on the LAN.
    let client = lan.host("client").expect("client");
    let ping = |c: &LanHost| {
        c.command(&["ping", "-c1", "-W1", &vip.to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ping(&client) {
        assert!(Instant::now() < deadline, "VIP {vip} never answered");
    }
    let holders: Vec<&Node> = nodes.iter().filter(|n| n.holds(vip)).collect();
    assert_eq!(holders.len(), 1, "exactly one node holds the VIP");
    let holder = holders[0].name.clone();
    // kill -9 the holder's keepalived: another node takes the VIP.
    let pid = holders[0].keepalived_pid().expect("pid");
    let _ = Command::new("pkill")
        .args([
            "-9",
            "-F",
            &format!("{}/vrrp.pid", holders[0].dir.display()),
        ])
        .status();
    let _ = Command::new("kill").args(["-9", &pid]).status();
    // The dead daemon leaves its address behind; a cut power would not.
    let hn = nodes.iter().find(|n| n.name == holder).expect("holder");
    let _ = hn
        .cmd(&["ip", "addr", "del", &format!("{vip}/24"), "dev", "eth0"])
        .status();
    let cut = Instant::now();
    let deadline = cut + Duration::from_secs(20);
    loop {
        let new: Vec<&Node> = nodes
            .iter()
            .filter(|n| n.name != holder && n.holds(vip))
            .collect();
        if new.len() == 1 && ping(&client) {
            println!(
                "VIP moved from {holder} to {} in {} ms",
                new[0].name,
                cut.elapsed().as_millis()
            );
            break;
        }
        assert!(Instant::now() < deadline, "VIP did not move off {holder}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(client);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}
