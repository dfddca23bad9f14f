// SPDX-License-Identifier: Apache-2.0
//! The command seam (device): every external program, every Ceph monitor
//! command and every read of the container engine's API goes through a
//! `Runner`, so tests run the real logic against a fake. Nothing here knows
//! a feature.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub type Result<T> = std::result::Result<T, String>;

/// Runs external programs; tests substitute a recording fake.
pub trait Runner {
    fn run(&self, argv: &[&str]) -> Result<String>;

    /// A Ceph monitor command (the JSON the `ceph` CLI would send) with
    /// the admin key of the system at `root`; returns the output buffer.
    fn mon_command(&self, root: &Path, cmd: &str, inbuf: &[u8]) -> Result<Vec<u8>> {
        let _ = (root, inbuf);
        Err(format!("no Ceph monitor client here for {cmd}"))
    }

    /// `METHOD path` (with a JSON `body`) on the container engine's API
    /// socket: the body of a 2xx answer. No `docker` process: under three
    /// loaded TCG guests one took 45 s before it said anything, and the
    /// daemon's swarm writes timed out waiting for it.
    fn engine(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<String> {
        let _ = (body, timeout);
        Err(format!("no container engine here for {method} {path}"))
    }

    /// `GET path` on the engine's API.
    fn engine_get(&self, path: &str, timeout: Duration) -> Result<String> {
        self.engine("GET", path, None, timeout)
    }
}

pub struct RealRunner;

impl Runner for RealRunner {
    fn run(&self, argv: &[&str]) -> Result<String> {
        let (prog, args) = argv.split_first().ok_or("empty command")?;
        let out = Command::new(prog)
            .args(args)
            .output()
            .map_err(|e| format!("starting {prog}: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: String = err
                .chars()
                .rev()
                .take(512)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(format!(
                "{} failed ({}): {}",
                redact(argv),
                out.status,
                tail.trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn mon_command(&self, root: &Path, cmd: &str, inbuf: &[u8]) -> Result<Vec<u8>> {
        crate::rados::mon_command(root, cmd, inbuf)
    }

    fn engine(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<String> {
        let reply = socket_call(&engine_socket(), method, path, body, timeout)?;
        http_body(&reply)
            .map(str::to_string)
            .map_err(|e| format!("{method} {path}: {e}"))
    }
}

/// The engine's unix socket: `DOCKER_HOST=unix://PATH` as the CLI reads it,
/// else the default.
fn engine_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| "/run/docker.sock".into())
}

/// The whole HTTP reply to `METHOD path` on a unix socket.
fn socket_call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket timeout: {e}"))?;
    // HTTP/1.0: the daemon closes the connection after the body, unchunked.
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(format!("{head}{body}").as_bytes())
        .map_err(|e| format!("asking dockerd: {e}"))?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .map_err(|e| format!("reading dockerd's answer: {e}"))?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// The body of an HTTP reply, if its status is 2xx.
fn http_body(reply: &str) -> Result<&str> {
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or("dockerd's answer has no HTTP header")?;
    let status = head.lines().next().unwrap_or_default();
    if !status
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c.len() == 3 && c.starts_with('2'))
    {
        return Err(format!("dockerd answered {status}: {}", body.trim()));
    }
    Ok(body)
}

/// The command line for messages, with secrets (`--token T`) left out.
pub fn redact(argv: &[&str]) -> String {
    let mut out = Vec::with_capacity(argv.len());
    let mut hide = false;
    for a in argv {
        out.push(if hide { "<redacted>" } else { a });
        hide = *a == "--token";
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_answers_other_than_200_are_errors_that_carry_the_message() {
        let ok = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}\n";
        assert_eq!(http_body(ok), Ok("{\"a\":1}\n"));
        let e = http_body("HTTP/1.0 503 Service Unavailable\r\n\r\n{\"message\":\"This node is not a swarm manager.\"}")
            .expect_err("503");
        assert!(
            e.contains("503") && e.contains("not a swarm manager"),
            "{e}"
        );
        assert!(http_body("garbage").is_err());
    }
}
