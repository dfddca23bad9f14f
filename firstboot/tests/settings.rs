// SPDX-License-Identifier: Apache-2.0
//! The admin and timezone steps against a temporary root and a fake runner
//! that edits /etc/passwd and /etc/group the way useradd and gpasswd do.

use std::path::Path;

use hc_firstboot::engine::state::{State, Status};
use hc_firstboot::engine::{self, Step};
use hc_firstboot::settings::{Admin, Timezone};

mod support;
use support::{Fake, World};

const KEY1: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBG9ZkR3HkjDNhbN5VP46Hn1i3Q7hN7jRZ6jH3MwAHpD one@laptop";
const KEY2: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn5r8vmmVtu6bYQzsRZE0Y4Yt0ZCh8sYuhNFvNCmb4b two@phone";

/// useradd, groupadd and gpasswd on the root's account files.
struct Accounts<'a> {
    root: &'a Path,
}

impl Accounts<'_> {
    fn edit(&self, file: &str, f: impl Fn(&str) -> String) -> Result<String, String> {
        let p = self.root.join(file);
        let t = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
        std::fs::write(&p, f(&t)).map_err(|e| e.to_string())?;
        Ok(String::new())
    }
}

fn set_members(text: &str, group: &str, f: impl Fn(Vec<String>) -> Vec<String>) -> String {
    text.lines()
        .map(|l| {
            let (head, m) = l.rsplit_once(':').unwrap_or((l, ""));
            if l.split(':').next() == Some(group) {
                let cur = m
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect();
                format!("{head}:{}\n", f(cur).join(","))
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

impl World for Accounts<'_> {
    fn run(&self, _fake: &Fake<Self>, argv: &[&str]) -> Result<String, String> {
        match argv {
            ["groupadd", "--system", g] => self.edit("etc/group", |t| format!("{t}{g}:x:990:\n")),
            ["useradd", .., user] => {
                self.edit("etc/passwd", |t| {
                    format!("{t}{user}:x:1000:1000::/home/{user}:/bin/bash\n")
                })?;
                self.edit("etc/group", |t| format!("{t}{user}:x:1000:\n"))
            }
            ["gpasswd", "--add", user, g] => self.edit("etc/group", |t| {
                set_members(t, g, |mut m| {
                    m.push(user.to_string());
                    m
                })
            }),
            ["gpasswd", "--delete", user, g] => self.edit("etc/group", |t| {
                set_members(t, g, |m| m.into_iter().filter(|x| x != user).collect())
            }),
            _ => Err(format!("not faked: {argv:?}")),
        }
    }
}

fn w(root: &Path, p: &str, data: &str) {
    let f = root.join(p);
    std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
    std::fs::write(f, data).expect("write");
}

fn config(extra: &str) -> String {
    format!("schema = 1\n[cluster]\nname = \"home\"\ndomain = \"home.arpa\"\n{extra}")
}

fn device(root: &Path) {
    w(
        root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nceph:x:64045:64045::/var/lib/ceph:/usr/sbin/nologin\n",
    );
    w(root, "etc/group", "root:x:0:\nsudo:x:27:\n");
}

fn read(root: &Path, p: &str) -> String {
    std::fs::read_to_string(root.join(p)).unwrap_or_default()
}

const STEPS: [&dyn Step; 1] = [&Admin];

#[test]
fn admin_gets_the_keys_sudo_and_the_ssh_group_and_removed_keys_go() {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path();
    device(root);
    let fake = Fake::new(Accounts { root });
    w(
        root,
        "boot/hcboot/homecloud.toml",
        &config(&format!(
            "[ssh]\nauthorized_keys = [\"{KEY1}\", \"{KEY2}\"]\n"
        )),
    );
    assert_eq!(engine::run_steps(root, &fake, &STEPS, false), Ok(true));
    assert_eq!(
        read(root, "etc/ssh/authorized_keys/homecloud"),
        format!("{KEY1}\n{KEY2}\n")
    );
    assert!(read(root, "etc/group").contains("hc-ssh:x:990:homecloud\n"));
    assert!(read(root, "etc/sudoers.d/hc-admin").contains("homecloud ALL=(ALL:ALL) NOPASSWD: ALL"));
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(root.join(p))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("etc/sudoers.d/hc-admin"), 0o440);
    assert_eq!(mode("etc/ssh/authorized_keys/homecloud"), 0o644);
    let st = State::load(root).expect("state");
    assert_eq!(st.steps["admin"].status, Status::Done);
    assert!(st.steps["admin"].facts["login"].contains("2 key(s)"));

    // The next boot with nothing changed runs no program.
    fake.forget_calls();
    assert_eq!(engine::run_steps(root, &fake, &STEPS, false), Ok(true));
    assert_eq!(fake.calls(), Vec::<String>::new());

    // A key removed from the file is gone from the node at the next boot.
    w(
        root,
        "boot/hcboot/homecloud.toml",
        &config(&format!("[ssh]\nauthorized_keys = [\"{KEY2}\"]\n")),
    );
    assert_eq!(engine::run_steps(root, &fake, &STEPS, false), Ok(true));
    assert_eq!(
        read(root, "etc/ssh/authorized_keys/homecloud"),
        format!("{KEY2}\n")
    );
    assert_eq!(fake.calls(), Vec::<String>::new(), "no account change");

    // No keys: no SSH login at all, and the status says how to add one.
    w(root, "boot/hcboot/homecloud.toml", &config(""));
    assert_eq!(engine::run_steps(root, &fake, &STEPS, false), Ok(true));
    assert!(!root.join("etc/ssh/authorized_keys/homecloud").exists());
    let st = State::load(root).expect("state");
    assert!(st.steps["admin"].facts["login"].contains("add a public key"));
}

#[test]
fn a_renamed_admin_loses_ssh_and_sudo_and_a_system_account_is_refused() {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path();
    device(root);
    let fake = Fake::new(Accounts { root });
    let with = |user: &str| {
        config(&format!(
            "[ssh]\nadmin_user = \"{user}\"\nauthorized_keys = [\"{KEY1}\"]\n"
        ))
    };
    w(root, "boot/hcboot/homecloud.toml", &with("homecloud"));
    assert_eq!(engine::run_steps(root, &fake, &STEPS, false), Ok(true));
    w(root, "boot/hcboot/homecloud.toml", &with("anna"));
    assert_eq!(engine::run_steps(root, &fake, &STEPS, false), Ok(true));
    assert!(read(root, "etc/group").contains("hc-ssh:x:990:anna\n"));
    assert!(!root.join("etc/ssh/authorized_keys/homecloud").exists());
    assert_eq!(
        read(root, "etc/ssh/authorized_keys/anna"),
        format!("{KEY1}\n")
    );
    let sudo = read(root, "etc/sudoers.d/hc-admin");
    assert!(
        sudo.contains("anna ALL") && !sudo.contains("homecloud ALL"),
        "{sudo}"
    );

    // An existing system account (uid < 1000) is not made an admin.
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path();
    device(root);
    w(
        root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nhcsvc:x:999:999::/:/usr/sbin/nologin\n",
    );
    let fake = Fake::new(Accounts { root });
    w(root, "boot/hcboot/homecloud.toml", &with("hcsvc"));
    let e = engine::run_steps(root, &fake, &STEPS, false).expect_err("system account");
    assert!(e.contains("system account") && e.contains("uid 999"), "{e}");
    assert!(!root.join("etc/sudoers.d/hc-admin").exists());
}

#[test]
fn timezone_links_localtime_and_an_unknown_zone_keeps_the_old_one() {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path();
    w(root, "usr/share/zoneinfo/Etc/UTC", "TZif");
    w(root, "usr/share/zoneinfo/Europe/Berlin", "TZif");
    std::fs::create_dir_all(root.join("etc")).expect("etc");
    std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", root.join("etc/localtime"))
        .expect("link");
    w(root, "etc/timezone", "Etc/UTC\n");
    let fake = Fake::new(Accounts { root });
    let steps: [&dyn Step; 1] = [&Timezone];
    w(
        root,
        "boot/hcboot/homecloud.toml",
        &config("").replace(
            "domain = \"home.arpa\"\n",
            "domain = \"home.arpa\"\ntimezone = \"Europe/Berlin\"\n",
        ),
    );
    assert_eq!(engine::run_steps(root, &fake, &steps, false), Ok(true));
    assert_eq!(
        std::fs::read_link(root.join("etc/localtime")).expect("link"),
        Path::new("/usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(read(root, "etc/timezone"), "Europe/Berlin\n");
    assert_eq!(fake.calls(), Vec::<String>::new());

    // A zone this node's database lacks (the build host's had it): the
    // step fails, says why, and the node keeps Berlin.
    w(
        root,
        "boot/hcboot/homecloud.toml",
        &config("").replace(
            "domain = \"home.arpa\"\n",
            "domain = \"home.arpa\"\ntimezone = \"Europe/Paris\"\n",
        ),
    );
    let e = engine::run_steps(root, &fake, &steps, false).expect_err("missing zone");
    assert!(
        e.contains("Europe/Paris") && e.contains("keeping Europe/Berlin"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/localtime")).expect("link"),
        Path::new("/usr/share/zoneinfo/Europe/Berlin")
    );
}
