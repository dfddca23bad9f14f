// SPDX-License-Identifier: Apache-2.0
//! Multi-guest LANs for real: namespaces, bridge, taps, veths, dnsmasq and a
//! DHCP client, and a QEMU guest on a tap. Needs root; a missing tool fails
//! the test with the `apt-get install` that provides it (.ci/install-deps).

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hc_qemu::lan::tool;
use hc_qemu::{Guest, GuestOpts, Lan, Machine};

fn ok<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

/// A LAN name unique to this test and process.
fn name(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

fn output(mut c: Command) -> Output {
    c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"))
}

/// A directory under the system temp dir, removed on drop (also on panic).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        ok(std::fs::create_dir_all(&d).map_err(Into::into));
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn namespaces() -> Vec<String> {
    let out = output({
        let mut c = Command::new(ok(tool("ip", "iproute2")));
        c.args(["netns", "list"]);
        c
    });
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn host_namespace_reaches_bridge_tap_exists_drop_cleans_up() {
    let ping = ok(tool("ping", "iputils-ping"));
    let lan = ok(Lan::create(&name("ping"), Ipv4Addr::new(10, 77, 1, 0)));
    let ns = lan.netns().to_string();
    assert!(namespaces().contains(&ns), "{ns} missing");
    assert_eq!(lan.gateway(), Ipv4Addr::new(10, 77, 1, 1));

    assert_eq!(ok(lan.tap(3)), "tap3");
    let out = output(lan.command(&["ip", "-d", "link", "show", "tap3"]));
    let link = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tap3 not in {ns}: {out:?}");
    assert!(
        link.contains("master br0"),
        "tap3 not on the bridge: {link}"
    );
    assert!(link.contains("tun type tap"), "{link}");

    let host = ok(lan.host("client"));
    assert_eq!(host.ip(), Some(Ipv4Addr::new(10, 77, 1, 250)));
    let out = output(host.command(&[
        ping.as_os_str(),
        "-c1".as_ref(),
        "-W2".as_ref(),
        "10.77.1.1".as_ref(),
    ]));
    assert!(out.status.success(), "host -> bridge: {out:?}");
    let out = output(lan.command(&[
        ping.as_os_str(),
        "-c1".as_ref(),
        "-W2".as_ref(),
        "10.77.1.250".as_ref(),
    ]));
    assert!(out.status.success(), "bridge -> host: {out:?}");
    // The host is not on the machine's own network.
    let out = output(host.command(&["ip", "-br", "addr"]));
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(addrs.contains("10.77.1.250/24"), "{addrs}");
    assert_eq!(addrs.lines().count(), 2, "only lo and eth0: {addrs}");

    let host_ns = host.netns().to_string();
    drop(host);
    assert!(!namespaces().contains(&host_ns), "{host_ns} left behind");
    drop(lan);
    assert!(!namespaces().contains(&ns), "{ns} left behind");
}

#[test]
fn dhcp_client_gets_fixed_address_and_dynamic_one() {
    let busybox = ok(tool("busybox", "busybox"));
    let lan = ok(Lan::create(&name("dhcp"), Ipv4Addr::new(10, 77, 2, 0)));
    let mac = "02:00:00:77:02:14";
    let fixed = Ipv4Addr::new(10, 77, 2, 20);
    ok(lan.fixed(mac, fixed));
    let udhcpc = |h: &hc_qemu::LanHost| {
        // -s /bin/true: take the lease, configure nothing.
        let argv = [
            busybox.as_os_str(),
            "udhcpc".as_ref(),
            "-f".as_ref(),
            "-q".as_ref(),
            "-n".as_ref(),
            "-t".as_ref(),
            "4".as_ref(),
            "-T".as_ref(),
            "1".as_ref(),
            "-i".as_ref(),
            "eth0".as_ref(),
            "-s".as_ref(),
            "/bin/true".as_ref(),
        ];
        let out = output(h.command(&argv));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "udhcpc in {}: {err}", h.netns());
        err
    };

    let client = ok(lan.dhcp_client("fixed", mac));
    let log = udhcpc(&client);
    assert!(
        log.contains("lease of 10.77.2.20 obtained from 10.77.2.1"),
        "{log}"
    );
    assert_eq!(
        ok(lan.wait_lease(mac, Duration::from_secs(5))),
        fixed,
        "{:?}",
        lan.leases()
    );
    assert!(ok(lan.leases()).contains(&(mac.to_string(), fixed)));

    // Another registration restarts dnsmasq: the first lease survives, and a
    // MAC without an entry gets an address from the range.
    ok(lan.fixed("02:00:00:77:02:15", Ipv4Addr::new(10, 77, 2, 21)));
    let other = ok(lan.dhcp_client("dynamic", "02:00:00:77:02:99"));
    udhcpc(&other);
    let dynamic = ok(lan.wait_lease(other.mac(), Duration::from_secs(5)));
    assert!(
        (100..=199).contains(&dynamic.octets()[3]),
        "dynamic lease {dynamic} outside .100-.199"
    );
    let leases = ok(lan.leases());
    assert!(leases.contains(&(mac.to_string(), fixed)), "{leases:?}");
    assert_eq!(leases.len(), 2, "{leases:?}");
}

#[test]
fn bad_input_is_refused_with_the_fix() {
    let e = tool("hc-no-such-tool", "hc-some-package").expect_err("missing tool");
    assert!(
        format!("{e:#}").contains("apt-get install hc-some-package"),
        "{e:#}"
    );
    let e = Lan::create("x", Ipv4Addr::new(10, 77, 3, 5))
        .err()
        .expect("not a /24 network address");
    assert!(format!("{e:#}").contains("10.77.3.5"), "{e:#}");
    assert!(Lan::create("a.b", Ipv4Addr::new(10, 77, 3, 0)).is_err());

    let lan = ok(Lan::create(&name("bad"), Ipv4Addr::new(10, 77, 3, 0)));
    assert!(lan
        .fixed("02:00:00:00:00:01", Ipv4Addr::new(10, 77, 4, 9))
        .is_err());
    assert!(lan
        .fixed("02:00:00:00:00:01", Ipv4Addr::new(10, 77, 3, 1))
        .is_err());
    assert!(lan
        .fixed("02:00:00:00:00:01", Ipv4Addr::new(10, 77, 3, 250))
        .is_err());
    assert!(lan.fixed("not-a-mac", Ipv4Addr::new(10, 77, 3, 9)).is_err());
    ok(lan.fixed("02:00:00:00:00:01", Ipv4Addr::new(10, 77, 3, 9)));
    assert!(lan
        .fixed("02:00:00:00:00:02", Ipv4Addr::new(10, 77, 3, 9))
        .is_err());
}

/// QEMU attached to a tap: U-Boot finds no bootable disk and asks for an
/// address by DHCP, which dnsmasq answers from the range. (U-Boot 2023.01
/// asks as 52:52:52:52:52:52, not with the NIC's MAC, so a fixed entry
/// cannot be checked here; Linux in the guest uses the NIC's MAC.)
#[test]
fn guest_on_tap_gets_a_lease_from_dnsmasq() {
    let lan = ok(Lan::create(&name("guest"), Ipv4Addr::new(10, 77, 4, 0)));
    let net = ok(lan.net(0));
    let dir = TempDir::new("hc-lan-guest");
    let work = dir.0.clone();
    let image = work.join("empty.img");
    ok(std::fs::write(&image, vec![0u8; 1 << 20]).map_err(Into::into));
    let opts = GuestOpts {
        machine: Machine::Arm64,
        image,
        workdir: work.clone(),
        disk_size: 1 << 20,
        memory_mib: 256,
        cpus: 1,
        mac: "52:54:00:77:04:0a".into(),
        reuse_disk: false,
        net,
        data_disk: None,
    };
    let cmd = ok(Guest::command(&opts, &work.join("disk.img")));
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(args[..3], ["netns", "exec", lan.netns()], "{args:?}");
    assert!(
        args.contains(&"tap,id=n0,ifname=tap0,script=no,downscript=no".to_string()),
        "{args:?}"
    );

    let started = Instant::now();
    let mut guest = ok(Guest::start(&opts));
    let lease = loop {
        if let Some(l) = ok(lan.leases()).into_iter().next() {
            break l;
        }
        if started.elapsed() > Duration::from_secs(60) {
            guest.kill();
            panic!("no lease within 60 s; console:\n{}", guest.console_text());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "lease {lease:?} after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!((100..=199).contains(&lease.1.octets()[3]), "{lease:?}");
    let bound = ok(guest.wait_for("DHCP client bound to address", Duration::from_secs(20)));
    assert!(bound.contains(&lease.1.to_string()), "{bound}");
    guest.kill();
}

#[test]
fn stale_namespaces_of_the_same_name_are_replaced() {
    let n = name("stale");
    let ip = ok(tool("ip", "iproute2"));
    for ns in [format!("hc-{n}"), format!("hc-{n}.old")] {
        let out = output({
            let mut c = Command::new(&ip);
            c.args(["netns", "add", &ns]);
            c
        });
        assert!(out.status.success(), "ip netns add {ns}: {out:?}");
    }
    let lan = ok(Lan::create(&n, Ipv4Addr::new(10, 77, 5, 0)));
    let list = namespaces();
    assert!(list.contains(&format!("hc-{n}")), "{list:?}");
    assert!(!list.contains(&format!("hc-{n}.old")), "{list:?}");
    // The namespace is the new one: it has the bridge.
    let out = output(lan.command(&["ip", "-br", "addr", "show", "br0"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.77.5.1/24"),
        "{out:?}"
    );
    drop(lan);
    assert!(!namespaces()
        .iter()
        .any(|ns| ns.starts_with(&format!("hc-{n}"))));
}

#[test]
fn a_lan_without_dhcp_answers_dns_and_gives_no_lease() {
    let busybox = ok(tool("busybox", "busybox"));
    let lan = ok(Lan::create_without_dhcp(
        &name("nodhcp"),
        Ipv4Addr::new(10, 77, 5, 0),
    ));
    assert!(!lan.serves_dhcp());
    assert!(lan
        .fixed("02:00:00:77:05:14", Ipv4Addr::new(10, 77, 5, 20))
        .is_err());
    let client = ok(lan.dhcp_client("asks", "02:00:00:77:05:99"));
    let out = output(client.command(&[
        busybox.as_os_str(),
        "udhcpc".as_ref(),
        "-f".as_ref(),
        "-q".as_ref(),
        "-n".as_ref(),
        "-t".as_ref(),
        "2".as_ref(),
        "-T".as_ref(),
        "1".as_ref(),
        "-i".as_ref(),
        "eth0".as_ref(),
        "-s".as_ref(),
        "/bin/true".as_ref(),
    ]));
    assert!(!out.status.success(), "a lease on a LAN without DHCP");
    assert_eq!(ok(lan.leases()), Vec::new());
    let host = ok(lan.host("resolver"));
    let out = output(host.command(&[
        busybox.as_os_str(),
        "nslookup".as_ref(),
        "router.home.arpa".as_ref(),
        "10.77.5.1".as_ref(),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("10.77.5.1"), "{text}");
}
