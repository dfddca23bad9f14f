// SPDX-License-Identifier: Apache-2.0
//! homecloud.toml: what is accepted, what is refused, and how errors read.

use super::*;

#[test]
fn role_labels_follow_roles_and_default_to_storage_and_ingress() {
    let c: HomecloudConfig = toml::from_str(
        "schema = 1\n[cluster]\nname = \"h\"\ndomain = \"home.arpa\"\n[[nodes]]\nname = \"a\"\nmac = \"52:54:00:00:00:01\"\n[[nodes]]\nname = \"b\"\nmac = \"52:54:00:00:00:02\"\nroles = [\"worker\", \"storage\"]\n",
    )
    .expect("config");
    let l = |n: &str| -> Vec<String> {
        c.role_labels(n)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    };
    assert_eq!(
        l("a"),
        ["homecloud.role.storage=true", "homecloud.role.ingress=true"]
    );
    assert_eq!(l("b"), ["homecloud.role.storage=true"]);
    assert_eq!(l("node-7"), l("a"));
}
use proptest::prelude::*;

const MIN: &str = "schema = 1\n[cluster]\nname = \"home\"\ndomain = \"home.arpa\"\n";

fn parse(s: &str) -> Result<HomecloudConfig, ConfigError> {
    HomecloudConfig::parse(s, "homecloud.toml")
}

#[test]
fn minimal_file_parses_with_defaults() {
    let c = parse(MIN).expect("minimal config");
    assert_eq!(c.network.mode, AddressMode::Dhcp);
    assert_eq!(c.cluster.timezone, "Etc/UTC");
    assert!(c.nodes.is_empty());
}

#[test]
fn example_file_is_valid() {
    let text = include_str!("../../../examples/homecloud.toml");
    let c = parse(text).expect("examples/homecloud.toml must validate");
    assert!(!c.nodes.is_empty());
}

#[test]
fn unknown_key_names_its_path() {
    let e = parse(&format!("{MIN}colour = \"blue\"\n")).expect_err("unknown key");
    assert!(e.problem.contains("unknown field `colour`"), "{e}");
    let e = parse(&format!(
        "{MIN}[[nodes]]\nname = \"a\"\nmac = \"52:54:00:00:00:01\"\nrole = []\n"
    ))
    .expect_err("unknown nested key");
    assert_eq!(e.key, "nodes[0].role", "{e}");
    assert!(
        e.to_string()
            .starts_with("homecloud.toml: nodes[0].role: line 8: unknown field `role`"),
        "{e}"
    );
}

#[test]
fn wrong_schema_and_bad_toml_are_reported() {
    let e = parse("schema = 2\n").expect_err("schema 2");
    assert_eq!(e.key, "schema");
    let e = parse("schema = 1\n[cluster\n").expect_err("bad toml");
    assert_eq!(e.key, "(file)");
    assert!(e.problem.contains("not valid TOML"));
}

#[test]
fn bad_values_name_key_and_fix() {
    let cases = [
        ("[[nodes]]\nname = \"a\"\nmac = \"52:54:00:zz:00:01\"\n", "nodes[0].mac"),
        ("[network]\nvip = \"10.0.0.1\"\n", "network.vip"),
        ("[network]\nmode = \"static\"\n", "network.gateway"),
        ("[services.minecraft]\n", "services.minecraft"),
        ("[ssh]\nauthorized_keys = [\"hello\"]\n", "ssh.authorized_keys[0]"),
        ("[storage]\nosd_device = \"sda\"\n", "storage.osd_device"),
        (
            "[[nodes]]\nname = \"a\"\nmac = \"52:54:00:00:00:01\"\n[[nodes]]\nname = \"a\"\nmac = \"52:54:00:00:00:02\"\n",
            "nodes[1].name",
        ),
    ];
    for (extra, key) in cases {
        let e = parse(&format!("{MIN}{extra}")).expect_err(extra);
        assert_eq!(e.key, key, "{e}");
        assert!(!e.fix.is_empty());
    }
}

const STATIC: &str =
    "[network]\nmode = \"static\"\ngateway = \"192.168.1.1\"\nvip = \"192.168.1.50/24\"\n";

fn node(k: u8, address: &str) -> String {
    format!("[[nodes]]\nname = \"n{k}\"\nmac = \"52:54:00:00:00:0{k}\"\naddress = \"{address}\"\n")
}

#[test]
fn static_addressing_is_checked_against_the_gateway() {
    let ok = parse(&format!(
        "{MIN}{STATIC}{}{}",
        node(1, "192.168.1.51/24"),
        node(2, "192.168.1.52/24")
    ))
    .expect("two static nodes");
    assert_eq!(
        static_dns(&ok.network),
        ["192.168.1.1"],
        "DNS defaults to the gateway"
    );
    let cases = [
        (
            node(1, "192.168.2.51/24"),
            "nodes[0].address",
            "not on the gateway",
        ),
        (node(1, "192.168.1.51/32"), "nodes[0].address", "prefix /32"),
        (node(1, "192.168.1.255/24"), "nodes[0].address", "broadcast"),
        (
            node(1, "192.168.1.1/24"),
            "nodes[0].address",
            "gateway's own",
        ),
        (
            node(1, "192.168.1.50/24"),
            "nodes[0].address",
            "network.vip",
        ),
        (
            format!(
                "{}{}",
                node(1, "192.168.1.51/24"),
                node(2, "192.168.1.51/24")
            ),
            "nodes[1].address",
            "also the address of nodes[0]",
        ),
        (
            "[[nodes]]\nname = \"a\"\nmac = \"52:54:00:00:00:01\"\n".into(),
            "nodes[0].address",
            "missing",
        ),
    ];
    for (nodes, key, problem) in cases {
        let e = parse(&format!("{MIN}{STATIC}{nodes}")).expect_err(&nodes);
        assert_eq!(e.key, key, "{e}");
        assert!(e.problem.contains(problem), "{e}");
    }
}

#[test]
fn wifi_is_checked_like_the_router_would() {
    let w = |ssid: &str, psk: &str, country: &str| {
        parse(&format!(
            "{MIN}[wifi]\nssid = \"{ssid}\"\npsk = \"{psk}\"\ncountry = \"{country}\"\n"
        ))
    };
    w("Home", "12345678", "DE").expect("a good one");
    for (cfg, key) in [
        (w("Home", "1234567", "DE"), "wifi.psk"),
        (w("Home", &"x".repeat(64), "DE"), "wifi.psk"),
        (w("Home", "pass\u{e9}word", "DE"), "wifi.psk"),
        (w("", "12345678", "DE"), "wifi.ssid"),
        (w("Home", "12345678", "de"), "wifi.country"),
    ] {
        assert_eq!(cfg.expect_err(key).key, key);
    }
}

#[test]
fn static_only_keys_in_dhcp_mode_are_refused_not_ignored() {
    let cases = [
        (
            "[network]\ngateway = \"10.0.0.1\"\n".to_string(),
            "network.gateway",
        ),
        (
            "[network]\ndns = [\"10.0.0.1\"]\n".to_string(),
            "network.dns",
        ),
        (node(1, "10.0.0.5/24"), "nodes[0].address"),
    ];
    for (extra, key) in cases {
        let e = parse(&format!("{MIN}{extra}")).expect_err(&extra);
        assert_eq!(e.key, key, "{e}");
        assert!(e.fix.contains("network.mode = \"static\""), "{e}");
    }
}

#[test]
fn keys_the_device_does_not_apply_yet_are_refused_by_name() {
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOc you@laptop";
    let cases = [
        ("[services.syncthing]\n", "services.syncthing"),
        (
            "[services.kapacitor]\nenabled = false\n",
            "services.kapacitor",
        ),
        ("[backup]\ntarget = \"/mnt/usb\"\n", "backup"),
    ];
    for (extra, want) in cases {
        let text = if extra.starts_with("[cluster]") {
            format!(
                "schema = 1\n[cluster]\nname = \"home\"\ndomain = \"home.arpa\"\n{}",
                &extra[10..]
            )
        } else {
            format!("{MIN}{}", extra.replace("KEY", key))
        };
        let e = parse(&text).expect_err(extra);
        assert_eq!(e.key, want, "{e}");
        assert!(e.problem.contains("not applied on the device yet"), "{e}");
        assert!(e.fix.contains("Not yet implemented"), "{e}");
    }
    // The defaults are what the device does: accepted.
    parse(&format!(
        "{MIN}[network]\nmode = \"dhcp\"\n[ssh]\nauthorized_keys = []\n"
    ))
    .expect("defaults spelled out");
}

#[test]
fn node_lookup_ignores_mac_case_and_separator() {
    let c = parse(&format!(
        "{MIN}[[nodes]]\nname = \"n1\"\nmac = \"52:54:00:AB:CD:EF\"\n"
    ))
    .expect("valid");
    assert_eq!(
        c.node_by_mac("52-54-00-ab-cd-ef").map(|n| n.name.as_str()),
        Some("n1")
    );
    assert!(c.node_by_mac("52:54:00:ab:cd:ee").is_none());
}

proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,200}") {
        let _ = parse(&s);
    }

    #[test]
    fn dns_label_rule(s in "[a-z0-9-]{1,70}") {
        let ok = is_dns_label(&s);
        prop_assert_eq!(ok, s.len() <= 63 && !s.starts_with('-') && !s.ends_with('-'));
    }
}

const RSA_1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDfEzOpskibvE7bUNgavu+GDY/SPj+eE2PpMHpAIfcq7z9Jkp25z+W0B7A0lxhcsgBDjg8cUSKindihQ5mG0g2BTTSVCOtb7pta1U+rUTQJTwnbmLV93xd4GoRlfz8D40Uy5WJn9L91bJ5Hfoq1gOP66brCEoS+pagmAh+Cexn4Lw== small";
const RSA_2048: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCkVMiht7LR3yHOHfhRwvum1eW0S04cgjD0l5Iq8VPUptESa5SQ4i19HZrcwKHMpo+HzxoGLZDM6oOiSaRsAlhoiq5YWEByLxMfPP+ML5fLDM8nss9ooIVYBBEbvIGaLa1BX6Xrl31h5m1S9q0sM6cMjp7OJvPE+q8HPGiLrM8MEVVC8lyntiLnqllNOYcBWkq5HNd4Wl3off9tRVfDCsYRKsGHZy0iw15lqxZFTXycDBiWbptKXB9AlPZANqdQ+jnVOdLacngjxqHVRTjLImJpnmHjFjYttghH6KMLIqtvEURMZVhXj28MXWxqBw+tIIG4hHlcyzUXJlCFxKKXNrGh ok";

#[test]
fn admin_login_and_time_zone_are_checked_at_build() {
    let ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINq3AAuXnFa4sUOAYWWY5997/eo9QUH7SvAsNWi9VoC1 you@laptop";
    let ok = parse(&format!(
        "schema = 1\n[cluster]\nname = \"home\"\ndomain = \"home.arpa\"\ntimezone = \"Europe/Berlin\"\n[ssh]\nadmin_user = \"anna\"\nauthorized_keys = [\"{RSA_2048}\"]\n"
    ))
    .expect("a 2048-bit RSA key, a new user and a real zone");
    assert_eq!(ok.ssh.admin_user, "anna");
    assert_eq!(parse(MIN).expect("defaults").ssh.admin_user, "homecloud");
    let cases = [
        (format!("[ssh]\nauthorized_keys = [\"{RSA_1024}\"]\n"), "ssh.authorized_keys[0]", "1024 bits"),
        (
            format!("[ssh]\nauthorized_keys = [\"{ed}\", 'permitopen=\"*:*\" {ed}']\n"),
            "ssh.authorized_keys[1]",
            "key options",
        ),
        (
            format!("[ssh]\nauthorized_keys = ['no-pty,command=\"/bin/sh\" {ed}']\n"),
            "ssh.authorized_keys[0]",
            "key options",
        ),
        (
            "[ssh]\nauthorized_keys = [\"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAINq3AAuXnFa4sUOAYWWY5997/eo9QUH7SvAsNWi9VoC1\"]\n".to_string(),
            "ssh.authorized_keys[0]",
            "ssh-ed25519 key",
        ),
        ("[ssh]\nadmin_user = \"root\"\n".to_string(), "ssh.admin_user", "system account"),
        ("[ssh]\nadmin_user = \"Anna Smith\"\n".to_string(), "ssh.admin_user", "not a user name"),
    ];
    for (extra, key, needle) in cases {
        let e = parse(&format!("{MIN}{extra}")).expect_err(&extra);
        assert_eq!(e.key, key, "{e}");
        assert!(e.problem.contains(needle), "{e}");
        assert!(!e.fix.is_empty());
    }
    for (zone, needle) in [
        ("Mars/Olympus_Mons", "time zone database"),
        ("../etc/passwd", "not a time zone name"),
        ("", "not a time zone name"),
    ] {
        let e = parse(&format!(
            "schema = 1\n[cluster]\nname = \"home\"\ndomain = \"home.arpa\"\ntimezone = \"{zone}\"\n"
        ))
        .expect_err(zone);
        assert_eq!(e.key, "cluster.timezone", "{e}");
        // Without tzdata on this host only the name's shape is checked.
        if needle != "time zone database" || std::path::Path::new(crate::config::ZONEINFO).is_dir()
        {
            assert!(e.problem.contains(needle), "{e}");
        }
    }
}
