// SPDX-License-Identifier: Apache-2.0
//! The OSD decisions of the `ceph` step against a fake disk and monitor (a
//! recording runner over a temporary root): an empty disk gets one OSD,
//! made once; a disk that holds data is never written; a half-made OSD of
//! this node is made again under the same id; a made one is only started.

use std::cell::RefCell;
use std::path::Path;

use hc_firstboot::ceph::material::Material;
use hc_firstboot::ceph::osd::{ensure_osd, Osd};
use hc_firstboot::config::HomecloudConfig;
use hc_firstboot::engine::Ctx;

mod support;
use support::{Fake, World};

const FSID: &str = "11111111-2222-4333-8444-555555555555";

/// Fake `/dev/vdb`, `ceph-osd --mkfs`, systemd and monitor. Commands that
/// write to the disk are recorded so tests can prove none ran.
#[derive(Default)]
struct FakeCeph {
    /// What `wipefs --no-act` reports.
    sigs: RefCell<String>,
    /// (osd uuid, cluster fsid) of a bluestore label on the disk.
    label: RefCell<Option<(String, String)>>,
    /// The osdmap.
    osds: RefCell<Vec<FakeOsd>>,
}

struct FakeOsd {
    id: u64,
    uuid: String,
    key: String,
    up: bool,
}

/// Commands that write to the disk or the osdmap.
fn writes(fake: &Fake<FakeCeph>) -> usize {
    ["wipefs --all", "dd ", "ceph-osd ", "osd new"]
        .iter()
        .map(|p| fake.count(p))
        .sum()
}

impl World for FakeCeph {
    fn run(&self, _fake: &Fake<Self>, argv: &[&str]) -> Result<String, String> {
        match argv {
            ["lsblk", ..] => Ok("\n".into()),
            ["wipefs", "--no-act", ..] => Ok(self.sigs.borrow().clone()),
            ["wipefs", "--all", ..] => {
                self.sigs.borrow_mut().clear();
                *self.label.borrow_mut() = None;
                Ok(String::new())
            }
            ["ceph-bluestore-tool", "show-label", ..] => match &*self.label.borrow() {
                Some((u, f)) => Ok(format!(
                    r#"{{"/dev/vdb": {{"osd_uuid": "{u}", "ceph_fsid": "{f}"}}}}"#
                )),
                None => Err("no label".into()),
            },
            ["ceph-authtool", "--gen-print-key"] => {
                Ok("AQBfakefakefakefakefakefakefakefakefakeA==\n".into())
            }
            ["ceph-osd", ..] => {
                let uuid = argv
                    .windows(2)
                    .find(|w| w[0] == "--osd-uuid")
                    .map(|w| w[1].to_string())
                    .ok_or("no --osd-uuid")?;
                *self.sigs.borrow_mut() = "ceph_bluestore\n".into();
                *self.label.borrow_mut() = Some((uuid, FSID.into()));
                Ok(String::new())
            }
            ["systemctl", "start", unit] => {
                let id = unit
                    .strip_prefix("ceph-osd@")
                    .and_then(|u| u.strip_suffix(".service"));
                if let Some(id) = id {
                    for o in self.osds.borrow_mut().iter_mut() {
                        if o.id.to_string() == id {
                            o.up = true;
                        }
                    }
                }
                Ok(String::new())
            }
            ["systemctl", "is-active", ..] => Err("inactive".into()),
            _ => Ok(String::new()),
        }
    }

    fn mon(
        &self,
        _fake: &Fake<Self>,
        v: &serde_json::Value,
        inbuf: &[u8],
    ) -> Result<Vec<u8>, String> {
        match v["prefix"].as_str().unwrap_or_default() {
            "osd dump" => {
                let osds: Vec<serde_json::Value> = self
                    .osds
                    .borrow()
                    .iter()
                    .map(|o| serde_json::json!({"osd": o.id, "uuid": o.uuid, "up": u8::from(o.up)}))
                    .collect();
                Ok(serde_json::json!({ "osds": osds }).to_string().into_bytes())
            }
            "osd new" => {
                let uuid = v["uuid"].as_str().ok_or("no uuid")?.to_string();
                let secret: serde_json::Value =
                    serde_json::from_slice(inbuf).map_err(|e| e.to_string())?;
                let key = secret["cephx_secret"]
                    .as_str()
                    .ok_or("no secret")?
                    .to_string();
                let mut osds = self.osds.borrow_mut();
                // The monitor's rule: same uuid and key, same id.
                if let Some(o) = osds.iter().find(|o| o.uuid == uuid) {
                    if o.key != key {
                        return Err("EEXIST: key does not match".into());
                    }
                    return Ok(format!(r#"{{"osdid":{}}}"#, o.id).into_bytes());
                }
                let id = osds.len() as u64;
                osds.push(FakeOsd {
                    id,
                    uuid,
                    key,
                    up: false,
                });
                Ok(format!(r#"{{"osdid":{id}}}"#).into_bytes())
            }
            other => Err(format!("unexpected monitor command {other}")),
        }
    }
}

fn root() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for (p, text) in [("dev/vdb", ""), ("proc/sys/kernel/hostname", "node1\n")] {
        let f = d.path().join(p);
        std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
        std::fs::write(f, text).expect("write");
    }
    std::fs::create_dir_all(d.path().join("var/lib/hc-firstboot")).expect("mkdir");
    d
}

fn ctx<'a>(root: &Path, fake: &'a Fake<FakeCeph>, wipe: bool) -> Ctx<'a> {
    let text = format!(
        "schema = 1\n[cluster]\nname = \"homecloud\"\ndomain = \"home.arpa\"\n[network]\nvip = \"10.80.0.10/24\"\n[storage]\nosd_device = \"/dev/vdb\"\nwipe = {wipe}\n"
    );
    Ctx::new(
        root,
        fake,
        HomecloudConfig::parse(&text, "homecloud.toml").expect("config"),
    )
}

fn material() -> Material {
    Material {
        fsid: FSID.into(),
        ..Material::default()
    }
}

#[test]
fn an_empty_disk_gets_one_osd_made_once() {
    let r = root();
    let fake = Fake::new(FakeCeph::default());
    let cx = ctx(r.path(), &fake, false);
    assert_eq!(ensure_osd(&cx, &material()), Ok(Osd::Up(0)));
    assert_eq!(fake.count("ceph-osd "), 1);
    assert_eq!(fake.count("wipefs --all"), 0, "an empty disk needs no wipe");
    assert!(r.path().join("var/lib/ceph/osd/ceph-0/hc-made").is_file());
    assert_eq!(
        std::fs::read_link(r.path().join("var/lib/ceph/osd/ceph-0/block")).expect("link"),
        Path::new("/dev/vdb")
    );
    let before = writes(&fake);
    assert_eq!(ensure_osd(&cx, &material()), Ok(Osd::Up(0)));
    assert_eq!(writes(&fake), before, "a second run wrote to the disk");
    assert_eq!(fake.world.osds.borrow().len(), 1);
}

#[test]
fn a_disk_that_holds_data_is_never_written() {
    let r = root();
    let fake = Fake::new(FakeCeph::default());
    *fake.world.sigs.borrow_mut() = "ext4\n".into();
    let cx = ctx(r.path(), &fake, false);
    match ensure_osd(&cx, &material()) {
        Ok(Osd::None(why)) => assert!(
            why.starts_with("refused: /dev/vdb holds ext4") && why.contains("storage.wipe = true"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(writes(&fake), 0, "{:?}", fake.calls());
    // Another cluster's OSD is someone's data too.
    *fake.world.sigs.borrow_mut() = "ceph_bluestore\n".into();
    *fake.world.label.borrow_mut() = Some(("u".into(), "another-fsid".into()));
    assert!(matches!(ensure_osd(&cx, &material()), Ok(Osd::None(_))));
    assert_eq!(writes(&fake), 0, "{:?}", fake.calls());
    // With wipe = true it is erased first.
    let cx = ctx(r.path(), &fake, true);
    assert_eq!(ensure_osd(&cx, &material()), Ok(Osd::Up(0)));
    assert_eq!(fake.count("wipefs --all"), 1);
}

#[test]
fn a_half_made_osd_is_made_again_under_its_id_and_a_made_one_only_started() {
    let r = root();
    let fake = Fake::new(FakeCeph::default());
    let cx = ctx(r.path(), &fake, false);
    assert_eq!(ensure_osd(&cx, &material()), Ok(Osd::Up(0)));
    // Power cut during mkfs: the label is ours, the marker missing, never up.
    std::fs::remove_file(r.path().join("var/lib/ceph/osd/ceph-0/hc-made")).expect("rm");
    fake.world.osds.borrow_mut()[0].up = false;
    assert_eq!(ensure_osd(&cx, &material()), Ok(Osd::Up(0)));
    assert_eq!(fake.count("ceph-osd "), 2, "made again");
    assert_eq!(fake.count("wipefs --all"), 1, "its own label erased first");
    assert_eq!(fake.world.osds.borrow().len(), 1, "no second OSD");
    // Power cut after mkfs, before the unit started: only started.
    fake.world.osds.borrow_mut()[0].up = false;
    let mkfs = fake.count("ceph-osd ");
    assert_eq!(ensure_osd(&cx, &material()), Ok(Osd::Up(0)));
    assert_eq!(fake.count("ceph-osd "), mkfs, "made twice");
    assert_eq!(fake.count("systemctl start ceph-osd@0.service"), 3);
}
