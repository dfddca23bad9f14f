// SPDX-License-Identifier: Apache-2.0
//! The admin login: one user (`ssh.admin_user`) with sudo and no password,
//! reachable over SSH with the keys of `ssh.authorized_keys` only. sshd reads
//! keys from root-owned `/etc/ssh/authorized_keys/<user>` and lets in the
//! `hc-ssh` group only (overlays/base/etc/ssh/sshd_config.d/hc-image.conf),
//! so the file on HCBOOT is the whole truth: a key removed there is gone at
//! the next boot, and a renamed admin loses SSH and sudo.

use std::collections::BTreeMap;

use crate::engine::{Ctx, Observed, Result, Step};
use crate::host::files::{write_atomic, PUBLIC};

pub struct Admin;

pub const KEYS_DIR: &str = "/etc/ssh/authorized_keys";
pub const SUDOERS: &str = "/etc/sudoers.d/hc-admin";
/// The only group sshd lets in.
pub const SSH_GROUP: &str = "hc-ssh";
/// First uid of a regular account (Debian's login.defs).
const UID_MIN: u32 = 1000;

/// What the files say now.
struct Seen {
    /// uid of the admin user, if it exists.
    uid: Option<u32>,
    ssh_group: Option<Vec<String>>,
    keys: BTreeMap<String, String>,
    sudoers: Option<String>,
}

fn members(line: &str) -> Vec<String> {
    line.rsplit(':')
        .next()
        .unwrap_or("")
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

fn seen(cx: &Ctx, user: &str) -> Result<Seen> {
    let read =
        |p: &str| std::fs::read_to_string(cx.path(p)).map_err(|e| format!("reading {p}: {e}"));
    let passwd = read("/etc/passwd")?;
    let uid = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user)).then(|| f.get(2)?.parse().ok())?
    });
    let group = read("/etc/group")?;
    let ssh_group = group
        .lines()
        .find(|l| l.split(':').next() == Some(SSH_GROUP))
        .map(members);
    let mut keys = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(cx.path(KEYS_DIR)) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            keys.insert(name, text);
        }
    }
    Ok(Seen {
        uid,
        ssh_group,
        keys,
        sudoers: std::fs::read_to_string(cx.path(SUDOERS)).ok(),
    })
}

fn want_keys(cx: &Ctx) -> String {
    cx.config
        .ssh
        .authorized_keys
        .iter()
        .map(|k| format!("{}\n", k.trim()))
        .collect()
}

fn want_sudoers(user: &str) -> String {
    format!("# hc-image: the admin user from homecloud.toml\n{user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
}

/// What `hc status` says about logging in.
fn login_fact(cx: &Ctx) -> String {
    let n = cx.config.ssh.authorized_keys.len();
    let user = &cx.config.ssh.admin_user;
    if n == 0 {
        "no SSH login: add a public key to ssh.authorized_keys in homecloud.toml \
         on HCBOOT and reboot"
            .into()
    } else {
        format!("ssh {user}@<node> with one of {n} key(s); sudo without password")
    }
}

impl Step for Admin {
    fn name(&self) -> &'static str {
        "admin"
    }
    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        let user = &cx.config.ssh.admin_user;
        let s = seen(cx, user)?;
        let keys = want_keys(cx);
        let keys_ok = if keys.is_empty() {
            s.keys.is_empty()
        } else {
            s.keys.len() == 1 && s.keys.get(user) == Some(&keys)
        };
        let done = s.uid.is_some_and(|u| u >= UID_MIN)
            && s.ssh_group.as_deref() == Some(std::slice::from_ref(user))
            && keys_ok
            && s.sudoers.as_deref() == Some(want_sudoers(user).as_str());
        Ok(if done {
            Observed::Done(BTreeMap::from([
                ("user".into(), user.clone()),
                (
                    "keys".into(),
                    cx.config.ssh.authorized_keys.len().to_string(),
                ),
                ("login".into(), login_fact(cx)),
            ]))
        } else {
            Observed::Pending
        })
    }
    fn apply(&self, cx: &Ctx) -> Result<()> {
        let user = cx.config.ssh.admin_user.as_str();
        let s = seen(cx, user)?;
        if s.ssh_group.is_none() {
            cx.runner.run(&["groupadd", "--system", SSH_GROUP])?;
        }
        match s.uid {
            Some(u) if u < UID_MIN => {
                return Err(format!(
                    "ssh.admin_user {user:?} is a system account here (uid {u}); \
                     choose another name in homecloud.toml"
                ))
            }
            Some(_) => {}
            // '*': no password that could ever match; not '!', which some
            // PAM stacks read as a locked account and refuse keys too.
            None => {
                cx.runner.run(&[
                    "useradd",
                    "--create-home",
                    "--shell",
                    "/bin/bash",
                    "--password",
                    "*",
                    user,
                ])?;
            }
        }
        // The group holds the admin and nobody else: a renamed admin's old
        // account stays, without SSH or sudo.
        for old in s.ssh_group.iter().flatten().filter(|m| *m != user) {
            cx.runner.run(&["gpasswd", "--delete", old, SSH_GROUP])?;
        }
        if !s.ssh_group.iter().flatten().any(|m| m == user) {
            cx.runner.run(&["gpasswd", "--add", user, SSH_GROUP])?;
        }
        for name in s.keys.keys().filter(|n| *n != user) {
            let p = cx.path(&format!("{KEYS_DIR}/{name}"));
            std::fs::remove_file(&p).map_err(|e| format!("removing {}: {e}", p.display()))?;
        }
        let keys = want_keys(cx);
        let mine = cx.path(&format!("{KEYS_DIR}/{user}"));
        if keys.is_empty() {
            if mine.exists() {
                std::fs::remove_file(&mine)
                    .map_err(|e| format!("removing {}: {e}", mine.display()))?;
            }
        } else {
            write_atomic(&mine, keys.as_bytes(), PUBLIC)?;
        }
        write_atomic(&cx.path(SUDOERS), want_sudoers(user).as_bytes(), 0o440)
    }
}
