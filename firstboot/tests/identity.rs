// SPDX-License-Identifier: Apache-2.0
//! The identity step against a temporary root and a fake runner: state in,
//! state out, and a second run repeats no side effect.

use std::cell::RefCell;
use std::path::Path;

use hc_firstboot::engine::state::{State, Status};
use hc_firstboot::engine::{self, Step};
use hc_firstboot::exec::RealRunner;
use hc_firstboot::identity::Identity;

mod support;
use support::{Fake, World};

/// Imitates ssh-keygen, partx, resize2fs and dumpe2fs.
struct Disk<'a> {
    root: &'a Path,
    fs_blocks: RefCell<u64>,
    grown_blocks: u64,
}

impl World for Disk<'_> {
    fn run(&self, _fake: &Fake<Self>, argv: &[&str]) -> Result<String, String> {
        match argv[0] {
            "ssh-keygen" => {
                // -f PATH is the last argument.
                let f = std::path::PathBuf::from(argv[argv.len() - 1]);
                assert!(f.starts_with(self.root), "{f:?} outside the root");
                std::fs::create_dir_all(f.parent().expect("dir")).map_err(|e| e.to_string())?;
                std::fs::write(&f, "k").map_err(|e| e.to_string())?;
                let mut pubf = f.into_os_string();
                pubf.push(".pub");
                std::fs::write(pubf, "k.pub").map_err(|e| e.to_string())?;
                Ok(String::new())
            }
            "resize2fs" => {
                *self.fs_blocks.borrow_mut() = self.grown_blocks;
                Ok(String::new())
            }
            "dumpe2fs" => Ok(format!(
                "Block count:              {}\nBlock size:               4096\n",
                self.fs_blocks.borrow()
            )),
            _ => Ok(String::new()),
        }
    }
}

fn disk(root: &Path) -> Fake<Disk<'_>> {
    Fake::new(Disk {
        root,
        fs_blocks: RefCell::new(512),
        grown_blocks: 14 * MIB / 4096,
    })
}

fn w(root: &Path, p: &str, data: &str) {
    let f = root.join(p);
    std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
    std::fs::write(f, data).expect("write");
}

const MIB: u64 = 1 << 20;

/// A device root: one NIC, root on vda2 of a 16 MiB disk whose partition 2
/// covers 2 MiB from 2 MiB.
fn device(root: &Path, config: &str) {
    w(
        root,
        "proc/net/route",
        "Iface\tDestination\tGateway\nenp0s1\t00000000\t0102000A\n",
    );
    w(root, "sys/class/net/enp0s1/address", "52:54:00:12:34:02\n");
    w(root, "sys/class/net/lo/address", "00:00:00:00:00:00\n");
    w(root, "etc/hostname", "localhost\n");
    w(root, "etc/hosts", "127.0.0.1\tlocalhost\n");
    w(root, "proc/sys/kernel/hostname", "localhost");
    w(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    w(root, "boot/hcboot/homecloud.toml", config);
    w(
        root,
        "proc/self/mountinfo",
        "22 1 254:2 / / rw,relatime shared:1 - ext4 /dev/vda2 rw\n",
    );
    w(
        root,
        "sys/devices/virtio/block/vda/size",
        &format!("{}\n", 16 * MIB / 512),
    );
    w(root, "sys/devices/virtio/block/vda/vda2/partition", "2\n");
    std::fs::create_dir_all(root.join("sys/class/block")).expect("mkdir");
    std::os::unix::fs::symlink(
        "../../devices/virtio/block/vda",
        root.join("sys/class/block/vda"),
    )
    .expect("link");
    std::os::unix::fs::symlink(
        "../../devices/virtio/block/vda/vda2",
        root.join("sys/class/block/vda2"),
    )
    .expect("link");
    std::fs::create_dir_all(root.join("dev")).expect("mkdir");
    let f = std::fs::File::create(root.join("dev/vda")).expect("disk");
    f.set_len(16 * MIB).expect("size");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join("dev/vda"))
        .expect("open");
    let mut m = mbrman::MBR::new_from(&mut f, 512, [9, 9, 9, 9]).expect("mbr");
    m[2] = mbrman::MBRPartitionEntry {
        boot: mbrman::BOOT_ACTIVE,
        first_chs: mbrman::CHS::empty(),
        sys: 0x83,
        last_chs: mbrman::CHS::empty(),
        starting_lba: (2 * MIB / 512) as u32,
        sectors: (2 * MIB / 512) as u32,
    };
    m.write_into(&mut f).expect("write mbr");
}

fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/homecloud.toml"
    ))
    .expect("example")
}

#[test]
fn first_run_converges_and_second_run_repeats_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path();
    device(root, &example());
    let fake = disk(root);
    let steps: [&dyn Step; 1] = [&Identity];
    assert_eq!(engine::run(root, &fake, &steps), Ok(true));
    // node2 is the example's entry for this MAC.
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).expect("read"),
        "node2\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("proc/sys/kernel/hostname")).expect("read"),
        "node2"
    );
    assert!(std::fs::read_to_string(root.join("etc/hosts"))
        .expect("read")
        .contains("127.0.1.1\tnode2"));
    let mut f = std::fs::File::open(root.join("dev/vda")).expect("open");
    let m = mbrman::MBR::read_from(&mut f, 512).expect("mbr");
    assert_eq!(
        u64::from(m[2].sectors) * 512,
        14 * MIB,
        "root grown to the disk end"
    );
    let calls = fake.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("ssh-keygen -q -t "))
            .count(),
        2,
        "{calls:?}"
    );
    assert!(
        calls.contains(&"partx -u --nr 2 /dev/vda".to_string()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"resize2fs /dev/vda2".to_string()),
        "{calls:?}"
    );
    assert!(root.join("var/lib/hc-firstboot/done").is_file());
    let st = State::load(root).expect("state");
    assert_eq!(st.steps["identity"].status, Status::Done);
    assert_eq!(st.steps["identity"].attempts, 1);

    // Reboot: nothing but reads.
    fake.forget_calls();
    assert_eq!(engine::run(root, &fake, &steps), Ok(true));
    let calls = fake.calls();
    assert!(calls.iter().all(|c| c.starts_with("dumpe2fs")), "{calls:?}");
    assert_eq!(
        State::load(root).expect("state").steps["identity"].attempts,
        1
    );
    assert!(engine::status(root, &RealRunner, &[]).contains("hostname: node2"));
}

#[test]
fn crash_after_the_table_resumes_with_the_filesystem_only() {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path();
    device(root, &example());
    // As if power was cut after the table was rewritten, before resize2fs.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join("dev/vda"))
        .expect("open");
    let g = hc_firstboot::identity::grow::plan(&mut f, 16 * MIB, 2)
        .expect("plan")
        .expect("grow");
    hc_firstboot::identity::grow::apply(&mut f, &g).expect("apply");
    let fake = disk(root);
    let steps: [&dyn Step; 1] = [&Identity];
    assert_eq!(engine::run(root, &fake, &steps), Ok(true));
    let calls = fake.calls();
    assert!(
        calls.contains(&"resize2fs /dev/vda2".to_string()),
        "{calls:?}"
    );
}

#[test]
fn invalid_config_changes_nothing_and_says_which_key() {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path();
    device(
        root,
        &example().replace("mac = \"52:54:00:12:34:02\"", "mac = \"52:54:00:12:34\""),
    );
    let fake = disk(root);
    let steps: [&dyn Step; 1] = [&Identity];
    let e = engine::run(root, &fake, &steps).expect_err("invalid config");
    assert!(e.contains("nodes[1].mac"), "{e}");
    assert!(fake.calls().is_empty());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).expect("read"),
        "localhost\n"
    );
    let s = engine::status(root, &RealRunner, &[]);
    assert!(s.contains("blocked") && s.contains("nodes[1].mac"), "{s}");
    // Fixed and rebooted: converges.
    w(root, "boot/hcboot/homecloud.toml", &example());
    assert_eq!(engine::run(root, &fake, &steps), Ok(true));
    assert!(!engine::status(root, &RealRunner, &[]).contains("blocked:"));
}

#[test]
fn unlisted_nodes_are_named_from_their_mac_and_bad_macs_get_no_name() {
    use hc_firstboot::identity::mac_name;
    assert_eq!(mac_name("52:54:00:AB:cd:0F").as_deref(), Some("hc-abcd0f"));
    // The founder and a joiner answered by any manager get the same name.
    assert_eq!(mac_name("52:54:00:12:34:56"), mac_name("52:54:00:12:34:56"));
    for bad in [
        "",
        "52:54:00:12:34",
        "52:54:00:12:34:56:78",
        "52:54:00:12:34:5g",
        "5254001234:56",
        "é:54:00:12:34:56",
    ] {
        assert_eq!(mac_name(bad), None, "{bad:?}");
    }
}
