// SPDX-License-Identifier: Apache-2.0
//! Device safety decisions over a fake sysfs and mountinfo tree (a fake,
//! for the decision logic only; tests/flash.rs uses real loop devices).

use super::*;
use std::collections::HashMap;
use std::os::unix::fs::symlink;

/// A fake `/sys` + `/proc` tree (not a real host), built as sysfs lays
/// it out: /sys/devices/.../block/NAME, with /sys/block and
/// /sys/dev/block symlinks into it.
struct FakeHost {
    dir: tempfile::TempDir,
    files: HashMap<PathBuf, DevNum>,
}

impl FakeHost {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["sys/block", "sys/dev/block", "proc/self"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        std::fs::write(
            dir.path().join("proc/swaps"),
            "Filename Type Size Used Priority\n",
        )
        .expect("swaps");
        std::fs::write(dir.path().join("proc/self/mountinfo"), "").expect("mountinfo");
        FakeHost {
            dir,
            files: HashMap::new(),
        }
    }

    fn w(&self, rel: &str, text: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    /// A disk under `bus` ("pci0000:00/usb1/1-1/host0/target0" ...).
    fn disk(&self, bus: &str, name: &str, dev: DevNum, sectors: u64, removable: bool) {
        let rel = format!("sys/devices/{bus}/block/{name}");
        self.w(&format!("{rel}/dev"), &format!("{}:{}\n", dev.0, dev.1));
        self.w(&format!("{rel}/size"), &format!("{sectors}\n"));
        self.w(&format!("{rel}/ro"), "0\n");
        self.w(
            &format!("{rel}/removable"),
            if removable { "1\n" } else { "0\n" },
        );
        self.w(&format!("sys/devices/{bus}/model"), "Card Reader    \n");
        self.w(&format!("sys/devices/{bus}/vendor"), "Generic\n");
        symlink(
            "../..",
            self.dir
                .path()
                .join(format!("sys/devices/{bus}/block/{name}/device")),
        )
        .expect("symlink");
        symlink(
            format!("../devices/{bus}/block/{name}"),
            self.dir.path().join(format!("sys/block/{name}")),
        )
        .expect("symlink");
        symlink(
            format!("../../devices/{bus}/block/{name}"),
            self.dir
                .path()
                .join(format!("sys/dev/block/{}:{}", dev.0, dev.1)),
        )
        .expect("symlink");
    }

    fn part(&self, bus: &str, disk: &str, name: &str, dev: DevNum, start: u64) {
        let rel = format!("sys/devices/{bus}/block/{disk}/{name}");
        self.w(&format!("{rel}/dev"), &format!("{}:{}\n", dev.0, dev.1));
        self.w(&format!("{rel}/partition"), "1\n");
        self.w(&format!("{rel}/start"), &format!("{start}\n"));
        self.w(&format!("{rel}/size"), "2048\n");
        symlink(
            format!("../../devices/{bus}/block/{disk}/{name}"),
            self.dir
                .path()
                .join(format!("sys/dev/block/{}:{}", dev.0, dev.1)),
        )
        .expect("symlink");
    }

    fn mount(&self, dev: DevNum, at: &str, source: &str) {
        let p = self.dir.path().join("proc/self/mountinfo");
        let mut t = std::fs::read_to_string(&p).expect("read");
        t.push_str(&format!(
            "{} 1 {}:{} / {at} rw,relatime - ext4 {source} rw\n",
            t.lines().count() + 20,
            dev.0,
            dev.1
        ));
        std::fs::write(p, t).expect("write");
    }

    fn host(&self) -> Host {
        let files = self.files.clone();
        Host {
            root: self.dir.path().to_path_buf(),
            dev_of: Box::new(move |p| files.get(p).copied()),
        }
    }
}

const USB: &str = "pci0000:00/usb1/1-1/host0/target0:0:0/0:0:0:0";
const SATA: &str = "pci0000:00/ata1/host1/target1:0:0/1:0:0:0";

/// sda: the system disk (root on sda2, swap on sda3); sdb: a USB card.
fn typical() -> FakeHost {
    let mut f = FakeHost::new();
    f.disk(SATA, "sda", (8, 0), 500 << 21, false);
    f.part(SATA, "sda", "sda1", (8, 1), 2048);
    f.part(SATA, "sda", "sda2", (8, 2), 4096);
    f.part(SATA, "sda", "sda3", (8, 3), 8192);
    f.disk(USB, "sdb", (8, 16), 8 << 21, true);
    f.part(USB, "sdb", "sdb1", (8, 17), 32768);
    f.mount((8, 2), "/", "/dev/sda2");
    f.mount((8, 1), "/boot/efi", "/dev/sda1");
    f.w(
        "proc/swaps",
        "Filename\tType\tSize\tUsed\tPriority\n/dev/sda3 partition 1000 0 -2\n",
    );
    f.files.insert(PathBuf::from("/dev/sda3"), (8, 3));
    f
}

fn reasons(h: &Host, name: &str, size: Option<u64>, force: bool) -> Vec<String> {
    let d = h.device(Path::new("/dev/x"), name).expect("device");
    refusals(&d, size, force)
        .into_iter()
        .map(|r| r.reason)
        .collect()
}

#[test]
fn a_removable_unmounted_card_big_enough_may_be_written() {
    let f = typical();
    let h = f.host();
    let d = h.device(Path::new("/dev/sdb"), "sdb").expect("sdb");
    assert_eq!(d.transport, "usb");
    assert_eq!(d.model, "Generic Card Reader");
    assert_eq!(d.size, 8 << 30);
    assert_eq!(d.partitions.len(), 1);
    assert_eq!(d.partitions[0].start, 32768 * 512);
    assert!(refusals(&d, Some(2 << 30), false).is_empty());
    let c = h.candidates();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].name, "sdb");
}

#[test]
fn the_root_and_swap_disk_is_refused_even_with_force() {
    let f = typical();
    let r = reasons(&f.host(), "sda", Some(1 << 30), true);
    assert!(r.iter().any(|x| x.contains("/ is on it")), "{r:?}");
    assert!(r.iter().any(|x| x.contains("swap /dev/sda3")), "{r:?}");
    assert!(
        r.iter().any(|x| x.contains("sda1 is mounted at /boot/efi")),
        "{r:?}"
    );
}

#[test]
fn root_on_device_mapper_or_loop_resolves_to_the_disk_beneath() {
    let mut f = FakeHost::new();
    f.disk(SATA, "nvme0n1", (259, 0), 1 << 30, false);
    f.part(SATA, "nvme0n1", "nvme0n1p2", (259, 2), 4096);
    f.disk("virtual", "dm-0", (253, 0), 1 << 29, false);
    std::fs::create_dir_all(f.dir.path().join("sys/devices/virtual/block/dm-0/slaves"))
        .expect("mkdir");
    symlink(
        "../../../../pci0000:00/ata1/host1/target1:0:0/1:0:0:0/block/nvme0n1/nvme0n1p2",
        f.dir
            .path()
            .join("sys/devices/virtual/block/dm-0/slaves/nvme0n1p2"),
    )
    .expect("symlink");
    // A live system: / on loop0, whose backing file is on sdc1.
    f.disk(USB, "sdc", (8, 32), 1 << 24, true);
    f.part(USB, "sdc", "sdc1", (8, 33), 2048);
    f.disk("virtual", "loop0", (7, 0), 1 << 20, false);
    f.w(
        "sys/devices/virtual/block/loop0/loop/backing_file",
        "/run/live/fs.squashfs\n",
    );
    f.files
        .insert(PathBuf::from("/run/live/fs.squashfs"), (8, 33));
    // btrfs reports an anonymous device number: the source decides.
    f.mount((0, 40), "/", "/dev/mapper/root");
    f.files.insert(PathBuf::from("/dev/mapper/root"), (253, 0));
    f.mount((7, 0), "/run/live/rootfs", "/dev/loop0");
    let h = f.host();
    let sys = h.system_disks();
    assert!(sys.iter().any(|(d, _)| d == "nvme0n1"), "{sys:?}");
    assert!(sys.iter().any(|(d, _)| d == "dm-0"), "{sys:?}");
    assert_eq!(
        h.disks_under((7, 0)),
        BTreeSet::from(["loop0".into(), "sdc".into()])
    );
    let r = reasons(&h, "nvme0n1", None, true);
    assert!(r.iter().any(|x| x.contains("/ is on it")), "{r:?}");
}

#[test]
fn mounted_held_small_readonly_and_fixed_disks_are_refused() {
    let f = typical();
    f.mount((8, 17), "/media/my\\040card", "/dev/sdb1");
    f.w(
        &format!("sys/devices/{USB}/block/sdb/sdb1/holders/dm-3"),
        "",
    );
    f.w(&format!("sys/devices/{USB}/block/sdb/ro"), "1\n");
    let r = reasons(&f.host(), "sdb", Some(9 << 30), false);
    assert_eq!(r.len(), 4, "{r:?}");
    assert!(r[0].contains("sdb1 is mounted at /media/my card"), "{r:?}");
    assert!(r[1].contains("in use by dm-3"), "{r:?}");
    assert!(r[2].contains("read-only"), "{r:?}");
    assert!(r[3].contains("needs 9.0GiB"), "{r:?}");

    // Non-removable: refused unless forced, and only that is overridable.
    let f = typical();
    f.w(&format!("sys/devices/{USB}/block/sdb/removable"), "0\n");
    let h = f.host();
    let r = reasons(&h, "sdb", Some(1 << 30), false);
    assert_eq!(r.len(), 1);
    assert!(r[0].contains("not a removable disk"));
    assert!(reasons(&h, "sdb", Some(1 << 30), true).is_empty());
    let d = h.device(Path::new("/dev/sdb"), "sdb").expect("sdb");
    let e = refusal_error(&d.path, &refusals(&d, None, false));
    assert!(e.fix.contains("--force"), "{e}");
}

#[test]
fn mountinfo_parsing() {
    let m = parse_mountinfo(
        "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
         garbage line\n\
         37 35 0:33 / /x rw - btrfs /dev/sdz1 rw\n",
    );
    assert_eq!(
        m,
        vec![
            Mount {
                dev: (98, 0),
                at: "/mnt/a b".into(),
                source: "/dev/root".into()
            },
            Mount {
                dev: (0, 33),
                at: "/x".into(),
                source: "/dev/sdz1".into()
            }
        ]
    );
    assert_eq!(split_dev(0x0803), (8, 3));
    assert_eq!(split_dev((259u64 << 8) | 5), (259, 5));
}
