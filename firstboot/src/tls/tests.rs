// SPDX-License-Identifier: Apache-2.0
//! The CA is made with the host's real openssl in a tempdir root and
//! judged by `openssl verify`, as a client would judge it.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::*;
use crate::cluster::duty::ClusterView;
use crate::config::HomecloudConfig;
use crate::exec::RealRunner;
use crate::host::net::Lan;

const WORKER_MAC: &str = "02:00:00:00:00:02";

fn ctx<'a>(runner: &'a RealRunner, root: &Path) -> Ctx<'a> {
    let text = format!(
        "schema = 1\n[cluster]\nname = \"family\"\ndomain = \"home.arpa\"\n\
         [[nodes]]\nname = \"a\"\nmac = \"02:00:00:00:00:01\"\n\
         [[nodes]]\nname = \"w\"\nmac = \"{WORKER_MAC}\"\nroles = [\"worker\"]\n"
    );
    let config = HomecloudConfig::parse(&text, "homecloud.toml").expect("config");
    Ctx::new(root, runner, config)
}

fn verify(root: &Path, crt: &str) -> std::process::Output {
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root.join(CA_CRT.trim_start_matches('/')))
        .arg(root.join(crt.trim_start_matches('/')))
        .output()
        .expect("openssl verify")
}

fn text(root: &Path, crt: &str) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(root.join(crt.trim_start_matches('/')))
        .output()
        .expect("openssl x509");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_founder_makes_a_name_constrained_ca_and_a_wildcard_certificate_once() {
    let d = tempfile::tempdir().expect("tempdir");
    let runner = RealRunner;
    let cx = ctx(&runner, d.path());
    make(&cx).expect("make");
    let v = verify(d.path(), CRT);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let site = text(d.path(), CRT);
    assert!(site.contains("DNS:home.arpa, DNS:*.home.arpa"), "{site}");
    assert!(site.contains("TLS Web Server Authentication"), "{site}");
    let ca = text(d.path(), CA_CRT);
    assert!(ca.contains("CA:TRUE, pathlen:0"), "{ca}");
    assert!(
        ca.contains("Permitted:") && ca.contains("DNS:home.arpa"),
        "{ca}"
    );
    for k in [CA_KEY, KEY] {
        let m = std::fs::metadata(cx.path(k))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600, "{k}");
    }
    // Again, as after a power cut: nothing made is made anew.
    let before = Bundle::load(&cx).expect("bundle");
    make(&cx).expect("make again");
    assert_eq!(Bundle::load(&cx), Some(before));
}

#[test]
fn the_ca_cannot_vouch_for_a_name_outside_the_domain() {
    let d = tempfile::tempdir().expect("tempdir");
    let runner = RealRunner;
    let cx = ctx(&runner, d.path());
    make(&cx).expect("make");
    let out = Command::new("openssl")
        .args(["req", "-new", "-x509", "-key"])
        .arg(cx.path(KEY))
        .arg("-CA")
        .arg(cx.path(CA_CRT))
        .arg("-CAkey")
        .arg(cx.path(CA_KEY))
        .args([
            "-days",
            "1",
            "-subj",
            "/CN=bank.example",
            "-addext",
            "subjectAltName=DNS:bank.example",
            "-out",
        ])
        .arg(d.path().join("evil.crt"))
        .output()
        .expect("openssl req");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = verify(d.path(), "evil.crt");
    assert!(!v.status.success(), "a name outside home.arpa was accepted");
    let why = String::from_utf8_lossy(&v.stdout) + String::from_utf8_lossy(&v.stderr);
    assert!(why.contains("permitted subtree violation"), "{why}");
}

#[test]
fn a_worker_gets_the_ca_certificate_without_keys() {
    let d = tempfile::tempdir().expect("tempdir");
    let runner = RealRunner;
    let cx = ctx(&runner, d.path());
    let view = ClusterView {
        lan: Lan {
            interface: "eth0".into(),
            mac: "02:00:00:00:00:01".into(),
            addr: "10.0.0.1".parse().expect("addr"),
            prefix: 24,
            broadcast: "10.0.0.255".parse().expect("addr"),
        },
        swarm: None,
    };
    let req = |mac: &str| JoinRequest {
        node: mac.into(),
        addr: "10.0.0.2".parse().expect("addr"),
        topic: TOPIC.into(),
    };
    assert!(matches!(
        Answer.answer(&cx, &view, &req(WORKER_MAC)),
        Err(JoinRefusal::NotYet { .. })
    ));
    make(&cx).expect("make");
    let all = Bundle::load(&cx).expect("bundle");
    let got = |mac: &str| -> Bundle {
        serde_json::from_value(Answer.answer(&cx, &view, &req(mac)).expect("answer"))
            .expect("bundle")
    };
    assert_eq!(got(WORKER_MAC), all.public());
    assert_eq!(got(WORKER_MAC).ca_key, None);
    // Listed without roles, or not listed: may become a manager.
    assert_eq!(got("02:00:00:00:00:01"), all);
    assert_eq!(got("02:00:00:00:00:09"), all);
}

#[test]
fn a_joiner_saves_the_bundle_and_copies_the_ca_to_hcboot() {
    let d = tempfile::tempdir().expect("tempdir");
    let runner = RealRunner;
    let founder = ctx(&runner, &d.path().join("founder"));
    make(&founder).expect("make");
    let b = Bundle::load(&founder).expect("bundle");
    let root = d.path().join("joiner");
    let boot = root.join("boot/hcboot");
    std::fs::create_dir_all(&boot).expect("mkdir");
    std::fs::write(boot.join("homecloud.toml"), "").expect("config");
    let cx = ctx(&runner, &root);
    b.save(&cx).expect("save");
    copy_to_boot(&cx, &b.ca_crt).expect("copy");
    assert_eq!(Bundle::load(&cx), Some(b.clone()));
    assert_eq!(
        std::fs::read_to_string(boot.join(BOOT_FILE)).expect("on HCBOOT"),
        b.ca_crt
    );
    let fp = fingerprint(&b.ca_crt).expect("fingerprint");
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cx.path(CA_CRT))
        .output()
        .expect("openssl x509");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&fp),
        "{fp} vs {}",
        String::from_utf8_lossy(&o.stdout)
    );
}
