// SPDX-License-Identifier: Apache-2.0
//! A private dockerd on the test host (root only): its own data root,
//! socket and pid file under a temporary directory, no bridge and no
//! iptables rules, so it never touches the host's networking or another
//! dockerd. Containers use `--network host` or `--network none`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct Dockerd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
}

impl Dockerd {
    pub fn start() -> Result<Dockerd> {
        let dir = tempfile::Builder::new()
            .prefix("hc-dockerd-")
            .tempdir()
            .context("tempdir")?;
        let d = dir.path();
        let sock = d.join("docker.sock");
        let log = std::fs::File::create(d.join("dockerd.log")).context("dockerd log")?;
        let child = Command::new(crate::tool("dockerd")?)
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        let me = Dockerd { child, dir, sock };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(90) {
            if me
                .cmd()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Ok(me);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        bail!("dockerd did not answer in 90 s: {}", me.log())
    }

    /// `docker -H unix://SOCK`.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(format!("unix://{}", self.sock.display()));
        // Logins land here, not in the host's ~/.docker.
        c.env("DOCKER_CONFIG", self.dir.path().join("client"));
        c
    }

    /// Runs `docker ARGS`; its stdout, or an error with stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.cmd().args(args).output().context("running docker")?;
        if !out.status.success() {
            bail!(
                "docker {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `docker load` of an OCI layout directory (tarred on the fly).
    pub fn load_layout(&self, layout: &Path) -> Result<String> {
        let tar = Command::new("tar")
            .arg("-C")
            .arg(layout)
            .args(["-cf", "-", "."])
            .stdout(Stdio::piped())
            .spawn()
            .context("tar")?;
        let out = self
            .cmd()
            .arg("load")
            .stdin(tar.stdout.context("tar stdout")?)
            .output()
            .context("docker load")?;
        if !out.status.success() {
            bail!(
                "docker load failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn log(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        s.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first, so their mounts are gone before the data root.
        if let Ok(ids) = self.run(&["ps", "-aq"]) {
            for id in ids.split_whitespace() {
                let _ = self.run(&["rm", "-f", id]);
            }
        }
        // SIGTERM: dockerd stops its containerd and unmounts.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // dockerd leaves its default network namespace mounted: without
        // this the temporary directory cannot be removed.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path().join("exec/netns/default"))
            .status();
    }
}
