// SPDX-License-Identifier: Apache-2.0
//! A LAN for several guests, like a home network behind a router: a network
//! namespace `hc-<name>` holding a bridge `br0` with the router address `.1`,
//! `dnsmasq` as the DHCP server (no DNS), a tap per guest and veth-joined
//! namespaces for test clients. Needs root. Everything is removed on drop.
//!
//! Addresses in the /24: `.1` the bridge, `.100`-`.199` the dynamic DHCP
//! range, `.250`-`.254` static [`LanHost`]s; fixed DHCP addresses anywhere
//! else (`.2`-`.99`, `.200`-`.249` are free for them).

use std::ffi::OsStr;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::Net;

/// The bridge inside the LAN namespace.
pub const BRIDGE: &str = "br0";
/// The first address of the static range handed to [`Lan::host`].
const HOST_BASE: u8 = 250;
/// Dynamic DHCP range.
const RANGE: (u8, u8) = (100, 199);

/// Serialises `ip netns add`: the first call on a machine sets up the shared
/// mount of /run/netns and is not safe to race against itself.
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// Finds `name` in PATH (then the sbin directories, which a test's PATH may
/// lack); the error names the Debian package that provides it.
pub fn tool(name: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("`{name}` not found in PATH; install it with: apt-get install {package}")
        })
}

/// Runs `c` to completion; an error carries its stderr.
fn run(c: &mut Command) -> Result<String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 40
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("{what} name {name:?}: use 1-40 of A-Z a-z 0-9 - _");
    }
    Ok(())
}

/// Lower-cases a MAC written as six `:`-separated hex pairs.
fn normalize_mac(mac: &str) -> Result<String> {
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        bail!("MAC {mac:?}: write six hex pairs separated by ':', like 52:54:00:12:34:01");
    }
    Ok(mac.to_ascii_lowercase())
}

/// Parses a dnsmasq lease file: `expiry mac ip hostname client-id` per line
/// (DHCPv6 `duid` lines and anything unparsable are skipped).
pub fn parse_leases(text: &str) -> Vec<(String, Ipv4Addr)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let _expiry = w.next()?;
            let mac = normalize_mac(w.next()?).ok()?;
            let ip = w.next()?.parse().ok()?;
            Some((mac, ip))
        })
        .collect()
}

/// Deletes a namespace by name; `Ok` if it did not exist.
fn netns_del(ip: &Path, ns: &str) -> Result<()> {
    let out = Command::new(ip)
        .args(["netns", "del", ns])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} netns del {ns}", ip.display()))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || err.contains("No such file") {
        return Ok(());
    }
    bail!("ip netns del {ns} failed: {}", err.trim())
}

fn netns_add(ip: &Path, ns: &str) -> Result<()> {
    let _serial = NETNS_ADD.lock().unwrap_or_else(|e| e.into_inner());
    run(Command::new(ip).args(["netns", "add", ns]))
        .with_context(|| format!("creating network namespace {ns} (needs root)"))?;
    Ok(())
}

/// A bridged /24 in its own network namespace with a DHCP server. Dropping it
/// stops dnsmasq and deletes the namespace with its bridge, taps and veths
/// (a QEMU still running in it keeps it alive until QEMU exits).
pub struct Lan {
    ns: String,
    prefix: [u8; 3],
    ip: PathBuf,
    dnsmasq_bin: PathBuf,
    dir: PathBuf,
    /// dnsmasq, the `--dhcp-host` entries it was started with, and how many
    /// times it was started (one log file per start).
    dhcp: Mutex<Dhcp>,
    next_host: AtomicU32,
    next_veth: AtomicU32,
    /// false: dnsmasq answers DNS only (a LAN of static addresses).
    serves_dhcp: bool,
}

struct Dhcp {
    child: Option<Child>,
    fixed: Vec<(String, Ipv4Addr)>,
    starts: u32,
}

impl Lan {
    /// Creates namespace `hc-<name>` with `br0` at `<subnet>.1/24` and starts
    /// dnsmasq on it. `name` must be unique among LANs alive on the machine;
    /// a stale namespace of the same name (and its hosts') is deleted first.
    pub fn create(name: &str, subnet: Ipv4Addr) -> Result<Lan> {
        Self::make(name, subnet, true)
    }

    /// Like [`Lan::create`], but the router has no DHCP server: dnsmasq
    /// answers DNS on `.1` only, so guests need static addresses.
    pub fn create_without_dhcp(name: &str, subnet: Ipv4Addr) -> Result<Lan> {
        Self::make(name, subnet, false)
    }

    fn make(name: &str, subnet: Ipv4Addr, serves_dhcp: bool) -> Result<Lan> {
        check_name("LAN", name)?;
        let o = subnet.octets();
        if o[3] != 0 {
            bail!("LAN subnet {subnet}: give the /24 network address, like 10.77.0.0");
        }
        let ip = tool("ip", "iproute2")?;
        let dnsmasq_bin = tool("dnsmasq", "dnsmasq-base")?;
        let ns = format!("hc-{name}");
        // Stale namespaces of an earlier run that did not drop (killed test).
        let list = run(Command::new(&ip).args(["netns", "list"]))?;
        for stale in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if stale == ns || stale.starts_with(&format!("{ns}.")) {
                netns_del(&ip, stale)?;
            }
        }
        let dir = std::env::temp_dir().join(format!("hc-lan-{name}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing stale {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Err(e) = netns_add(&ip, &ns) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        // From here on, Drop cleans up whatever was made.
        let lan = Lan {
            ns,
            prefix: [o[0], o[1], o[2]],
            ip,
            dnsmasq_bin,
            dir,
            dhcp: Mutex::new(Dhcp {
                child: None,
                fixed: Vec::new(),
                starts: 0,
            }),
            next_host: AtomicU32::new(0),
            next_veth: AtomicU32::new(0),
            serves_dhcp,
        };
        let cidr = format!("{}/24", lan.addr(1));
        lan.ip_n(&["link", "set", "lo", "up"])?;
        lan.ip_n(&["link", "add", BRIDGE, "type", "bridge"])?;
        lan.ip_n(&["addr", "add", &cidr, "dev", BRIDGE])?;
        lan.ip_n(&["link", "set", BRIDGE, "up"])?;
        {
            let mut d = lan.lock();
            lan.restart_dnsmasq(&mut d)?;
        }
        Ok(lan)
    }

    /// `<subnet>.<last>`.
    pub fn addr(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, last)
    }

    /// The bridge's (router's, DHCP server's) address, `.1`.
    pub fn gateway(&self) -> Ipv4Addr {
        self.addr(1)
    }

    /// The namespace holding the bridge, `hc-<name>`.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// Whether dnsmasq serves DHCP here (see [`Lan::create_without_dhcp`]).
    pub fn serves_dhcp(&self) -> bool {
        self.serves_dhcp
    }

    /// dnsmasq's lease file.
    pub fn lease_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.leases")
    }

    /// Runs `argv` inside the bridge namespace (`ip netns exec`).
    pub fn command<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        netns_exec(&self.ip, &self.ns, argv)
    }

    /// Gives `mac` the address `ip` by DHCP (dnsmasq `--dhcp-host=MAC,IP`).
    /// Call it before the guest asks: dnsmasq is restarted with the new entry
    /// (leases are kept), so a request in flight at that moment is lost and
    /// the client retries.
    pub fn fixed(&self, mac: &str, ip: Ipv4Addr) -> Result<()> {
        if !self.serves_dhcp {
            bail!(
                "LAN {} has no DHCP server: give {mac} the static address {ip} instead",
                self.ns
            );
        }
        let mac = normalize_mac(mac)?;
        let o = ip.octets();
        if o[..3] != self.prefix[..] || matches!(o[3], 0 | 1 | 255) || o[3] >= HOST_BASE {
            let [a, b, c] = self.prefix;
            bail!(
                "fixed address {ip} for {mac}: use {a}.{b}.{c}.2 to .249 \
                 (.1 is the bridge, .250 and up are static hosts)"
            );
        }
        let mut d = self.lock();
        if let Some((m, _)) = d.fixed.iter().find(|(m, a)| *a == ip && *m != mac) {
            bail!("fixed address {ip} is already given to {m}");
        }
        d.fixed.retain(|(m, _)| *m != mac);
        d.fixed.push((mac, ip));
        self.restart_dnsmasq(&mut d)
    }

    /// Creates tap device `tap<k>` in the namespace, on the bridge, up; QEMU
    /// attaches to it with [`Net::Tap`] (see [`Lan::net`]).
    pub fn tap(&self, k: u32) -> Result<String> {
        let tap = format!("tap{k}");
        self.ip_n(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.ip_n(&["link", "set", &tap, "master", BRIDGE])?;
        self.ip_n(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }

    /// Pulls (`up = false`) or plugs back the cable of the guest on `tap<k>`.
    pub fn link(&self, k: u32, up: bool) -> Result<()> {
        let tap = format!("tap{k}");
        self.ip_n(&["link", "set", &tap, if up { "up" } else { "down" }])?;
        Ok(())
    }

    /// [`Lan::tap`] and the [`Net`] for a guest's `GuestOpts` to use it.
    pub fn net(&self, k: u32) -> Result<Net> {
        Ok(Net::Tap {
            netns: self.ns.clone(),
            tap: self.tap(k)?,
        })
    }

    /// A client namespace `hc-<lan>.<name>` on the LAN with a static address
    /// `.250`, `.251`, ... (five at most), interface `eth0`.
    pub fn host(&self, name: &str) -> Result<LanHost> {
        let k = self.next_host.fetch_add(1, Ordering::SeqCst);
        let last = u8::try_from(k)
            .ok()
            .and_then(|k| HOST_BASE.checked_add(k))
            .filter(|l| *l < 255)
            .with_context(|| format!("LAN {}: at most 5 static hosts", self.ns))?;
        let [_, b, c] = self.prefix;
        // Locally administered ("hc"), unique per subnet and host.
        let mac = format!("02:68:63:{b:02x}:{c:02x}:{last:02x}");
        self.join(name, &mac, Some(self.addr(last)))
    }

    /// A client namespace like [`Lan::host`] whose `eth0` has MAC `mac` and
    /// no address: for a DHCP client run with [`LanHost::command`].
    pub fn dhcp_client(&self, name: &str, mac: &str) -> Result<LanHost> {
        let mac = normalize_mac(mac)?;
        self.join(name, &mac, None)
    }

    fn join(&self, name: &str, mac: &str, ip: Option<Ipv4Addr>) -> Result<LanHost> {
        check_name("host", name)?;
        let ns = format!("{}.{name}", self.ns);
        netns_add(&self.ip, &ns)?;
        let h = LanHost {
            ns,
            ip_bin: self.ip.clone(),
            ip,
            mac: mac.to_string(),
        };
        let veth = format!("vh{}", self.next_veth.fetch_add(1, Ordering::SeqCst));
        self.ip_n(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "address", mac, "netns",
            &h.ns,
        ])?;
        self.ip_n(&["link", "set", &veth, "master", BRIDGE])?;
        self.ip_n(&["link", "set", &veth, "up"])?;
        h.ip_n(&["link", "set", "lo", "up"])?;
        if let Some(a) = ip {
            h.ip_n(&["addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
        }
        h.ip_n(&["link", "set", "eth0", "up"])?;
        Ok(h)
    }

    /// The current leases, `(mac, ip)`, from dnsmasq's lease file.
    pub fn leases(&self) -> Result<Vec<(String, Ipv4Addr)>> {
        let f = self.lease_file();
        match std::fs::read_to_string(&f) {
            Ok(t) => Ok(parse_leases(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", f.display())),
        }
    }

    /// Waits until `mac` holds a lease; returns its address.
    pub fn wait_lease(&self, mac: &str, timeout: Duration) -> Result<Ipv4Addr> {
        let mac = normalize_mac(mac)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((_, ip)) = self.leases()?.into_iter().find(|(m, _)| *m == mac) {
                return Ok(ip);
            }
            {
                let mut d = self.lock();
                if let Some(c) = d.child.as_mut() {
                    if let Some(st) = c.try_wait().context("polling dnsmasq")? {
                        bail!("dnsmasq exited ({st}); log:\n{}", self.log_tail(&d));
                    }
                }
                if Instant::now() > deadline {
                    bail!(
                        "no DHCP lease for {mac} within {}s; dnsmasq log:\n{}",
                        timeout.as_secs(),
                        self.log_tail(&d)
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Dhcp> {
        self.dhcp.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ip_n(&self, args: &[&str]) -> Result<String> {
        run(Command::new(&self.ip).arg("-n").arg(&self.ns).args(args))
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.join(format!("dnsmasq.{start}.log"))
    }

    fn log_tail(&self, d: &Dhcp) -> String {
        let text = std::fs::read_to_string(self.log_path(d.starts)).unwrap_or_default();
        let err = std::fs::read_to_string(self.dir.join("dnsmasq.stderr")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().chain(err.lines()).collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// (Re)starts dnsmasq with the current fixed entries and waits until it
    /// serves DHCP (its "DHCP, IP range" line: logged after the socket is up).
    fn restart_dnsmasq(&self, d: &mut Dhcp) -> Result<()> {
        if let Some(mut c) = d.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        d.starts += 1;
        let log = self.log_path(d.starts);
        let stderr_path = self.dir.join("dnsmasq.stderr");
        let stderr = File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let mut c = netns_exec(&self.ip, &self.ns, &[&self.dnsmasq_bin]);
        c.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--interface",
            BRIDGE,
        ]);
        if self.serves_dhcp {
            c.args(["--port=0", "--dhcp-authoritative", "--log-dhcp"])
                .arg(format!(
                    "--dhcp-range={},{},255.255.255.0,1h",
                    self.addr(RANGE.0),
                    self.addr(RANGE.1)
                ));
        } else {
            // The home router's DNS, with no upstream here: names it was
            // told about, and the log shows who asked.
            c.args([
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--log-queries",
            ])
            .arg(format!("--host-record=router.home.arpa,{}", self.gateway()));
        }
        c.arg(format!("--dhcp-leasefile={}", self.lease_file().display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("dnsmasq.pid").display()
            ))
            .arg(format!("--log-facility={}", log.display()));
        for (mac, ip) in &d.fixed {
            c.arg(format!("--dhcp-host={mac},{ip}"));
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let child = c
            .spawn()
            .with_context(|| format!("starting dnsmasq in {}", self.ns))?;
        d.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let ready = if self.serves_dhcp {
                "DHCP, IP range"
            } else {
                "started, version"
            };
            if text.contains(ready) {
                return Ok(());
            }
            if let Some(c) = d.child.as_mut() {
                if let Some(st) = c.try_wait().context("polling dnsmasq")? {
                    d.child = None;
                    bail!("dnsmasq exited ({st}) at start:\n{}", self.log_tail(d));
                }
            }
            if Instant::now() > deadline {
                bail!("dnsmasq not serving after 10 s:\n{}", self.log_tail(d));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let d = self.dhcp.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(mut c) = d.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = netns_del(&self.ip, &self.ns) {
            eprintln!("hc-qemu: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn netns_exec<S: AsRef<OsStr>>(ip: &Path, ns: &str, argv: &[S]) -> Command {
    let mut c = Command::new(ip);
    c.args(["netns", "exec", ns]).args(argv);
    c
}

/// A client namespace on a [`Lan`], joined to its bridge by a veth pair
/// (`eth0` inside). Dropping it deletes the namespace and the pair.
pub struct LanHost {
    ns: String,
    ip_bin: PathBuf,
    ip: Option<Ipv4Addr>,
    mac: String,
}

impl LanHost {
    /// The static address; `None` for a [`Lan::dhcp_client`].
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.ip
    }

    /// The MAC of its `eth0`, lower case.
    pub fn mac(&self) -> &str {
        &self.mac
    }

    /// Its namespace, `hc-<lan>.<name>`.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// Runs `argv` inside the namespace (`ip netns exec`).
    pub fn command<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        netns_exec(&self.ip_bin, &self.ns, argv)
    }

    fn ip_n(&self, args: &[&str]) -> Result<String> {
        run(Command::new(&self.ip_bin)
            .arg("-n")
            .arg(&self.ns)
            .args(args))
    }
}

impl Drop for LanHost {
    fn drop(&mut self) {
        if let Err(e) = netns_del(&self.ip_bin, &self.ns) {
            eprintln!("hc-qemu: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_parse() {
        let t = "1795401193 02:00:00:00:00:05 10.99.0.50 * 01:02:00:00:00:00:05\n\
                 1795401200 52:54:00:AB:CD:EF 10.99.0.101 node1 *\n\
                 duid 00:01:00:01:2c:aa\n\
                 garbage\n";
        assert_eq!(
            parse_leases(t),
            vec![
                ("02:00:00:00:00:05".into(), Ipv4Addr::new(10, 99, 0, 50)),
                ("52:54:00:ab:cd:ef".into(), Ipv4Addr::new(10, 99, 0, 101)),
            ]
        );
    }

    #[test]
    fn names_and_macs_checked() {
        assert!(check_name("LAN", "lan-1_a").is_ok());
        assert!(check_name("LAN", "a.b").is_err());
        assert!(check_name("LAN", "").is_err());
        assert!(normalize_mac("52:54:00:12:34:0g").is_err());
        assert!(normalize_mac("52:54:00:12:34").is_err());
        assert_eq!(
            normalize_mac("52:54:00:AB:34:01").ok().as_deref(),
            Some("52:54:00:ab:34:01")
        );
    }
}
