// SPDX-License-Identifier: Apache-2.0
//! Boots hc-image disk images under QEMU (build host or CI, TCG): the
//! qemu-arm64 board through Debian's `u-boot-qemu` as `-bios` (never
//! `-kernel`, so the disk's own extlinux.conf is what boots), amd64 through
//! OVMF. Each guest runs on a grown copy of the image with its serial console
//! in a file the harness watches for markers.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod lan;
pub use lan::{Lan, LanHost};

/// Firmware and machine per architecture; the first existing path wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// `-M virt` aarch64 with U-Boot.
    Arm64,
    /// q35 x86_64 with OVMF.
    Amd64,
}

impl Machine {
    pub fn for_board(board: &str) -> Result<Machine> {
        match board {
            "qemu-arm64" => Ok(Machine::Arm64),
            "amd64" => Ok(Machine::Amd64),
            other => bail!("board {other} has no QEMU machine; use qemu-arm64 or amd64"),
        }
    }

    fn firmware(self) -> Result<PathBuf> {
        let (candidates, pkg): (&[&str], &str) = match self {
            Machine::Arm64 => (&["/usr/lib/u-boot/qemu_arm64/u-boot.bin"], "u-boot-qemu"),
            Machine::Amd64 => (
                &["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd"],
                "ovmf",
            ),
        };
        candidates
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .with_context(|| {
                format!("no firmware at {candidates:?}; install it with: apt-get install {pkg}")
            })
    }

    fn binary(self) -> &'static str {
        match self {
            Machine::Arm64 => "qemu-system-aarch64",
            Machine::Amd64 => "qemu-system-x86_64",
        }
    }
}

/// How the guest's NIC is connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Net {
    /// QEMU user networking with `restrict=on`: DHCP from QEMU, no traffic
    /// leaves the guest.
    #[default]
    User,
    /// A tap device in a network namespace (see [`Lan::net`]): QEMU runs under
    /// `ip netns exec NETNS` with `-netdev tap,ifname=TAP`.
    Tap { netns: String, tap: String },
}

#[derive(Debug, Clone)]
pub struct GuestOpts {
    pub machine: Machine,
    /// The built image; never modified.
    pub image: PathBuf,
    /// Working directory for the disk copy and the console log.
    pub workdir: PathBuf,
    /// Size of the disk copy the guest sees (grown so first boot can grow into it).
    pub disk_size: u64,
    pub memory_mib: u32,
    pub cpus: u32,
    /// MAC of the guest's NIC.
    pub mac: String,
    /// Reuse an existing disk copy (a second boot of the same guest).
    pub reuse_disk: bool,
    /// The NIC's network: QEMU user networking, or a tap on a [`Lan`].
    pub net: Net,
    /// Size of a second, empty disk (`data.img` in `workdir`, kept across
    /// boots): the guest's `/dev/vdb`, a data disk such as a Ceph OSD's.
    pub data_disk: Option<u64>,
}

pub struct Guest {
    child: Option<Child>,
    pub console: PathBuf,
    pub disk: PathBuf,
    started: Instant,
}

/// Copies `src` to `dst` keeping holes, then grows `dst` to `size`.
pub fn sparse_copy(src: &Path, dst: &Path, size: u64) -> Result<()> {
    let mut r = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut w = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let mut got = 0;
        while got < buf.len() {
            let n = r
                .read(&mut buf[got..])
                .with_context(|| format!("reading {}", src.display()))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        if got == 0 {
            break;
        }
        if buf[..got].iter().any(|&b| b != 0) {
            w.seek(SeekFrom::Start(pos))
                .context("seeking in the disk copy")?;
            w.write_all(&buf[..got]).context("writing the disk copy")?;
        }
        pos += got as u64;
    }
    w.set_len(size.max(pos)).context("growing the disk copy")?;
    Ok(())
}

impl Guest {
    /// Starts QEMU in the background with the console going to a file.
    /// Makes `o.data_disk` (empty, sparse) as `data.img` in the work
    /// directory unless it exists: [`Guest::command`] attaches it.
    pub fn ensure_data_disk(o: &GuestOpts) -> Result<()> {
        if let Some(size) = o.data_disk {
            let data = o.workdir.join("data.img");
            if !data.is_file() {
                let f =
                    File::create(&data).with_context(|| format!("creating {}", data.display()))?;
                f.set_len(size)
                    .with_context(|| format!("sizing {}", data.display()))?;
            }
        }
        Ok(())
    }

    pub fn start(o: &GuestOpts) -> Result<Guest> {
        std::fs::create_dir_all(&o.workdir)
            .with_context(|| format!("creating {}", o.workdir.display()))?;
        let disk = o.workdir.join("disk.img");
        let console = o.workdir.join("console.log");
        if !(o.reuse_disk && disk.is_file()) {
            sparse_copy(&o.image, &disk, o.disk_size)?;
        }
        Self::ensure_data_disk(o)?;
        let mut cmd = Self::command(o, &disk)?;
        cmd.arg("-serial")
            .arg(format!("file:{}", console.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // A fresh log per boot; keep the previous one for post-mortems.
        if console.exists() {
            let _ = std::fs::rename(&console, o.workdir.join("console.prev.log"));
        }
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {}; install it with: apt-get install qemu-system-arm qemu-system-x86",
                o.machine.binary()
            )
        })?;
        Ok(Guest {
            child: Some(child),
            console,
            disk,
            started: Instant::now(),
        })
    }

    /// The QEMU command line without the serial backend.
    pub fn command(o: &GuestOpts, disk: &Path) -> Result<Command> {
        let fw = o.machine.firmware()?;
        let mut c = match &o.net {
            Net::User => Command::new(o.machine.binary()),
            Net::Tap { netns, .. } => {
                let qemu = lan::tool(o.machine.binary(), "qemu-system-arm qemu-system-x86")?;
                let mut c = Command::new(lan::tool("ip", "iproute2")?);
                c.args(["netns", "exec", netns]).arg(qemu);
                c
            }
        };
        match o.machine {
            Machine::Arm64 => {
                // Not cortex-a57: with KASLR its kernel turns on page table
                // isolation (no E0PD), and TCG flushes its TLB at every
                // kernel entry and exit; plus Spectre-v2/BHB work the boards'
                // Cortex-A53 never does. `max` has E0PD and is not
                // vulnerable; no pointer auth or SVE (the A53 has neither,
                // and TCG emulates them slowly). First boot reached the
                // cluster step in 77 s instead of 129 s.
                c.args(["-M", "virt", "-cpu", "max,pauth=off,sve=off,sme=off"]);
            }
            Machine::Amd64 => {
                c.args(["-M", "q35"]);
            }
        }
        c.arg("-m")
            .arg(o.memory_mib.to_string())
            .arg("-smp")
            .arg(o.cpus.to_string())
            .arg("-bios")
            .arg(fw)
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            // cache=unsafe: a guest's flush does not wait for the host's
            // disk (monitors and journald flush often). A killed QEMU loses
            // nothing it wrote (it is in the host's page cache), so power
            // cuts test the same; only a host crash would lose more.
            .arg("-drive")
            .arg(format!(
                "if=none,id=hd0,format=raw,cache=unsafe,file={}",
                disk.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=hd0"]);
        if o.data_disk.is_some() {
            let data = o.workdir.join("data.img");
            c.arg("-drive")
                .arg(format!(
                    "if=none,id=hd1,format=raw,cache=unsafe,file={}",
                    data.display()
                ))
                .args(["-device", "virtio-blk-pci,drive=hd1"]);
        }
        c.arg("-netdev")
            .arg(match &o.net {
                // restrict=on: DHCP from QEMU, but no traffic leaves the guest.
                Net::User => "user,id=n0,restrict=on".to_string(),
                Net::Tap { tap, .. } => format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            })
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={}", o.mac));
        Ok(c)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn console_text(&self) -> String {
        std::fs::read(&self.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the console shows `marker`; returns the line holding it.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console_text();
            if let Some(line) = text.lines().find(|l| l.contains(marker)) {
                return Ok(line.trim().to_string());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(st) = child.try_wait().context("polling QEMU")? {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    bail!(
                        "QEMU exited ({st}) before {marker:?}; stderr: {}; console tail:\n{}",
                        err.trim(),
                        tail(&text, 3000)
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "no {marker:?} on the console within {}s; console tail:\n{}",
                    timeout.as_secs(),
                    tail(&text, 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits for QEMU to exit by itself (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while let Some(child) = self.child.as_mut() {
            if child.try_wait().context("polling QEMU")?.is_some() {
                self.child = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("guest did not power off within {}s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// Pulls the plug: SIGKILL, like a power cut.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let mut i = start;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// Parses `key=value` pairs from a verdict line.
pub fn fields(line: &str) -> std::collections::BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_fields_parse() {
        let f = fields("[  12.3] HC-VERDICT state=running failed= hostname=node1");
        assert_eq!(f["state"], "running");
        assert_eq!(f["failed"], "");
        assert_eq!(f["hostname"], "node1");
    }

    #[test]
    fn sparse_copy_grows_and_keeps_bytes() {
        let d = std::env::temp_dir().join(format!("hc-qemu-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        let src = d.join("a");
        let mut f = File::create(&src).expect("create");
        f.set_len(3 << 20).expect("len");
        f.seek(SeekFrom::Start(2 << 20)).expect("seek");
        f.write_all(b"data").expect("write");
        sparse_copy(&src, &d.join("b"), 8 << 20).expect("copy");
        let b = std::fs::read(d.join("b")).expect("read");
        assert_eq!(b.len(), 8 << 20);
        assert_eq!(&b[2 << 20..(2 << 20) + 4], b"data");
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
