// SPDX-License-Identifier: Apache-2.0
//! Which disk is this, and may we write it? Facts come from `/proc` and
//! `/sys` under a [`Host`] root (`/` for real, a fake tree in tests); the
//! decision ([`refusals`]) is a pure function of those facts.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::InputError;
use crate::size::human;

/// A block device number (major, minor).
pub type DevNum = (u32, u32);

/// Splits a `dev_t` the way glibc's `major()`/`minor()` do.
pub fn split_dev(dev: u64) -> DevNum {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// Finds the device number of a path (see [`Host`]).
pub type DevOf = Box<dyn Fn(&Path) -> Option<DevNum>>;

/// Where `/proc` and `/sys` are read from, and how a path's device number
/// is found (a block device's own number, else the one of the filesystem
/// holding the file).
pub struct Host {
    pub root: PathBuf,
    pub dev_of: DevOf,
}

/// A partition of the device, from sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub dev: DevNum,
    pub start: u64,
    pub size: u64,
}

/// Everything the safety decision and the confirmation prompt need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub path: PathBuf,
    pub name: String,
    pub dev: DevNum,
    /// Bytes.
    pub size: u64,
    pub removable: bool,
    pub read_only: bool,
    pub model: String,
    pub transport: String,
    pub partitions: Vec<Part>,
    /// (device or partition name, mount point)
    pub mounted: Vec<(String, String)>,
    /// (device or partition name, holder such as dm-0)
    pub holders: Vec<(String, String)>,
    /// Why this is a disk the running system needs ("/ is on it", ...).
    pub system: Vec<String>,
}

/// One reason not to write, and what the user can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub fix: String,
}

/// The reasons `dev` must not be overwritten with an image of `image_size`
/// bytes (when known). Only a non-removable disk is overridable (`force`).
pub fn refusals(dev: &Device, image_size: Option<u64>, force: bool) -> Vec<Refusal> {
    let mut out = Vec::new();
    for why in &dev.system {
        out.push(Refusal {
            reason: format!("it is the disk the running system needs ({why})"),
            fix: "choose another device; there is no override for this".into(),
        });
    }
    for (name, at) in &dev.mounted {
        out.push(Refusal {
            reason: format!("{name} is mounted at {at}"),
            fix: format!("unmount it (umount /dev/{name}) and run again"),
        });
    }
    for (name, holder) in &dev.holders {
        out.push(Refusal {
            reason: format!("{name} is in use by {holder} (device mapper, LVM, RAID or swap)"),
            fix: format!("stop what uses it (e.g. dmsetup remove {holder}) and run again"),
        });
    }
    if dev.read_only {
        out.push(Refusal {
            reason: "the device is read-only".into(),
            fix: "slide the card's write-protect switch to unlocked and reinsert it".into(),
        });
    }
    if let Some(need) = image_size {
        if dev.size < need {
            out.push(Refusal {
                reason: format!(
                    "the device holds {} ({} bytes), the image needs {} ({need} bytes)",
                    human(dev.size),
                    dev.size,
                    human(need)
                ),
                fix: format!("use a card of at least {}", human(need)),
            });
        }
    }
    if !dev.removable && !force {
        out.push(Refusal {
            reason: format!(
                "it is not a removable disk (/sys/block/{}/removable is 0)",
                dev.name
            ),
            fix: "if you are sure it is the card (some USB readers and all loop devices \
                  report non-removable), pass --force"
                .into(),
        });
    }
    out
}

/// All refusals as one input error (exit 2) naming the device.
pub fn refusal_error(dev: &Path, r: &[Refusal]) -> InputError {
    InputError::new(
        dev.display().to_string(),
        "device",
        format!(
            "refusing to write: {}",
            r.iter()
                .map(|x| x.reason.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        r.iter()
            .map(|x| x.fix.as_str())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// One line of `/proc/self/mountinfo`: device number, mount point, source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: DevNum,
    pub at: String,
    pub source: String,
}

/// Undoes the octal escapes (`\040`) of mountinfo and /proc/swaps.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (maj, min) = f.get(2)?.split_once(':')?;
            let dash = f.iter().position(|x| *x == "-")?;
            Some(Mount {
                dev: (maj.parse().ok()?, min.parse().ok()?),
                at: unescape(f.get(4)?),
                source: unescape(f.get(dash + 2).unwrap_or(&"")),
            })
        })
        .collect()
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn parse_devnum(s: &str) -> Option<DevNum> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Host {
    /// The machine we run on.
    pub fn real() -> Self {
        Host {
            root: PathBuf::from("/"),
            dev_of: Box::new(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some(split_dev(if m.file_type().is_block_device() {
                    m.rdev()
                } else {
                    m.dev()
                }))
            }),
        }
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    fn sys_block(&self, name: &str) -> PathBuf {
        self.at("sys/block").join(name)
    }

    pub fn mounts(&self) -> Vec<Mount> {
        read_trim(&self.at("proc/self/mountinfo"))
            .map(|t| parse_mountinfo(&t))
            .unwrap_or_default()
    }

    /// The device number a mount lives on: its own, else its source's
    /// (btrfs and others report an anonymous 0:N).
    fn mount_dev(&self, m: &Mount) -> Option<DevNum> {
        if m.dev.0 != 0 {
            return Some(m.dev);
        }
        if m.source.starts_with('/') {
            return (self.dev_of)(Path::new(&m.source));
        }
        None
    }

    /// (disk, partition) names for a device number, from /sys/dev/block.
    pub fn names_of(&self, dev: DevNum) -> Option<(String, Option<String>)> {
        let link = self.at(&format!("sys/dev/block/{}:{}", dev.0, dev.1));
        let dir = std::fs::canonicalize(link).ok()?;
        let name = dir.file_name()?.to_string_lossy().into_owned();
        if dir.join("partition").exists() {
            let disk = dir.parent()?.file_name()?.to_string_lossy().into_owned();
            Some((disk, Some(name)))
        } else {
            Some((name, None))
        }
    }

    /// Every whole disk a device number rests on: itself (or the disk of a
    /// partition), the slaves of device-mapper/RAID devices and the disk
    /// holding a loop device's backing file, recursively.
    pub fn disks_under(&self, dev: DevNum) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.walk_down(dev, &mut out, 0);
        out
    }

    fn walk_down(&self, dev: DevNum, out: &mut BTreeSet<String>, depth: u32) {
        if depth > 8 {
            return;
        }
        let Some((disk, part)) = self.names_of(dev) else {
            return;
        };
        if !out.insert(disk.clone()) {
            return;
        }
        let mut dirs = vec![self.sys_block(&disk)];
        if let Some(p) = &part {
            dirs.push(self.sys_block(&disk).join(p));
        }
        for d in dirs {
            if let Ok(rd) = std::fs::read_dir(d.join("slaves")) {
                for e in rd.flatten() {
                    if let Some(n) = read_trim(&e.path().join("dev")).and_then(|s| parse_devnum(&s))
                    {
                        self.walk_down(n, out, depth + 1);
                    }
                }
            }
        }
        if let Some(back) = read_trim(&self.sys_block(&disk).join("loop/backing_file")) {
            if let Some(n) = (self.dev_of)(Path::new(&back)) {
                self.walk_down(n, out, depth + 1);
            }
        }
    }

    /// Disks the running system needs, each with the reason: the root
    /// filesystem's and every active swap area's.
    pub fn system_disks(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for m in self.mounts().iter().filter(|m| m.at == "/") {
            if let Some(d) = self.mount_dev(m) {
                for disk in self.disks_under(d) {
                    out.push((disk, "/ is on it".to_string()));
                }
            }
        }
        let swaps = read_trim(&self.at("proc/swaps")).unwrap_or_default();
        for line in swaps.lines().skip(1) {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            let name = unescape(name);
            if let Some(d) = (self.dev_of)(Path::new(&name)) {
                for disk in self.disks_under(d) {
                    out.push((disk, format!("swap {name} is on it")));
                }
            }
        }
        out
    }

    fn transport(&self, name: &str) -> String {
        let p = std::fs::canonicalize(self.sys_block(name))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (needle, t) in [
            ("/usb", "usb"),
            ("/mmc", "mmc"),
            ("/nvme", "nvme"),
            ("/ata", "sata"),
            ("/virtio", "virtio"),
            ("/virtual/", "virtual"),
        ] {
            if p.contains(needle) {
                return t.into();
            }
        }
        "?".into()
    }

    fn model(&self, name: &str) -> String {
        let d = self.sys_block(name);
        if let Some(b) = read_trim(&d.join("loop/backing_file")) {
            return format!("loop device over {b}");
        }
        let dev = d.join("device");
        let vendor = read_trim(&dev.join("vendor")).unwrap_or_default();
        let model = read_trim(&dev.join("model"))
            .or_else(|| read_trim(&dev.join("name")))
            .unwrap_or_default();
        let s = format!("{vendor} {model}").trim().to_string();
        if s.is_empty() {
            "unknown model".into()
        } else {
            s
        }
    }

    /// The facts about whole disk `name` (as under /sys/block).
    pub fn device(&self, path: &Path, name: &str) -> Option<Device> {
        let d = self.sys_block(name);
        let dev = parse_devnum(&read_trim(&d.join("dev"))?)?;
        let sectors: u64 = read_trim(&d.join("size"))?.parse().ok()?;
        let mut partitions = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if !p.join("partition").exists() {
                    continue;
                }
                let num = |f: &str| read_trim(&p.join(f)).and_then(|s| s.parse::<u64>().ok());
                if let (Some(pd), Some(start), Some(size)) = (
                    read_trim(&p.join("dev")).and_then(|s| parse_devnum(&s)),
                    num("start"),
                    num("size"),
                ) {
                    partitions.push(Part {
                        name: e.file_name().to_string_lossy().into_owned(),
                        dev: pd,
                        start: start * 512,
                        size: size * 512,
                    });
                }
            }
        }
        partitions.sort_by_key(|p| p.start);

        let mut mounted = Vec::new();
        for m in self.mounts() {
            let Some(md) = self.mount_dev(&m) else {
                continue;
            };
            if md == dev {
                mounted.push((name.to_string(), m.at.clone()));
            }
            for p in partitions.iter().filter(|p| p.dev == md) {
                mounted.push((p.name.clone(), m.at.clone()));
            }
        }
        let mut holders = Vec::new();
        let mut holder_dirs = vec![(name.to_string(), d.join("holders"))];
        holder_dirs.extend(
            partitions
                .iter()
                .map(|p| (p.name.clone(), d.join(&p.name).join("holders"))),
        );
        for (who, hd) in holder_dirs {
            if let Ok(rd) = std::fs::read_dir(hd) {
                for e in rd.flatten() {
                    holders.push((who.clone(), e.file_name().to_string_lossy().into_owned()));
                }
            }
        }
        // Swap on a partition is "in use" too, even without a holder link.
        let system = self
            .system_disks()
            .into_iter()
            .filter(|(disk, _)| disk == name)
            .map(|(_, why)| why)
            .collect();
        Some(Device {
            path: path.to_path_buf(),
            name: name.to_string(),
            dev,
            size: sectors * 512,
            removable: read_trim(&d.join("removable")).as_deref() == Some("1"),
            read_only: read_trim(&d.join("ro")).as_deref() == Some("1"),
            model: self.model(name),
            transport: self.transport(name),
            partitions,
            mounted,
            holders,
            system,
        })
    }

    /// Resolves a device path given by the user to a whole disk's facts,
    /// or an input error saying what it is instead.
    pub fn open_device(&self, path: &Path) -> Result<Device, InputError> {
        let bad = |problem: String, fix: &str| {
            InputError::new(path.display().to_string(), "device", problem, fix)
        };
        let list_fix = "give the card's whole-disk device, e.g. /dev/sdb or /dev/mmcblk0 (see `hc-image flash --list`)";
        let meta =
            std::fs::metadata(path).map_err(|e| bad(format!("cannot be read: {e}"), list_fix))?;
        if !meta.file_type().is_block_device() {
            let what = if meta.is_file() {
                "a regular file"
            } else if meta.is_dir() {
                "a directory"
            } else {
                "not a disk"
            };
            return Err(bad(format!("is not a block device ({what})"), list_fix));
        }
        let dev = split_dev(meta.rdev());
        let (disk, part) = self.names_of(dev).ok_or_else(|| {
            bad(
                format!("block device {}:{} is not in /sys/dev/block", dev.0, dev.1),
                list_fix,
            )
        })?;
        if let Some(p) = part {
            return Err(bad(
                format!("is partition {p} of {disk}, not a whole disk"),
                &format!("give the whole disk, /dev/{disk}"),
            ));
        }
        self.device(path, &disk)
            .ok_or_else(|| bad(format!("cannot read /sys/block/{disk}"), list_fix))
    }

    /// Candidate cards: removable (or USB/MMC) disks with media, not the
    /// system's own disks.
    pub fn candidates(&self) -> Vec<Device> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.at("sys/block")) else {
            return out;
        };
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let path = self.at("dev").join(&n);
            let Some(d) = self.device(&path, &n) else {
                continue;
            };
            let card_like = d.removable || d.transport == "usb" || d.transport == "mmc";
            if card_like && d.size > 0 && d.system.is_empty() {
                out.push(Device {
                    path: PathBuf::from("/dev").join(&n),
                    ..d
                });
            }
        }
        out
    }
}

/// Lines describing a device for the confirmation prompt and `--list`.
pub fn describe(d: &Device) -> String {
    let mut s = format!(
        "{}: {}, {} ({} bytes), transport {}{}",
        d.path.display(),
        d.model,
        human(d.size),
        d.size,
        d.transport,
        if d.removable { ", removable" } else { "" }
    );
    if d.partitions.is_empty() {
        s.push_str("\n  no partitions");
    }
    for p in &d.partitions {
        let at = d
            .mounted
            .iter()
            .filter(|(n, _)| n == &p.name)
            .map(|(_, m)| format!(", mounted at {m}"))
            .collect::<String>();
        s.push_str(&format!(
            "\n  {}: {} at offset {}{at}",
            p.name,
            human(p.size),
            p.start
        ));
    }
    s
}

#[cfg(test)]
mod tests;
