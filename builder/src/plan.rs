// SPDX-License-Identifier: Apache-2.0
//! The disk layout: pure arithmetic over a board and a root size.
//!
//! Build host. No I/O here, so every rule is unit- and property-tested:
//! partitions aligned and inside the disk, blobs clear of the partition table,
//! of each other and of every partition.

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::size::{human, MIB};
use crate::spec::{BoardSpec, Bootable, TableKind};

pub const SECTOR: u64 = 512;
/// Protective MBR + GPT header + 128 entries of 128 bytes.
pub const GPT_PRIMARY_END: u64 = SECTOR * 2 + 128 * 128;
/// Backup entry array + backup header at the end of the disk.
pub const GPT_BACKUP_LEN: u64 = 128 * 128 + SECTOR;
/// Disk signature and the four MBR partition entries (boot code before them is free).
pub const MBR_TABLE: Region = Region {
    start: 440,
    end: 512,
};

pub const GPT_TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const GPT_TYPE_BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
pub const GPT_TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
pub const GPT_TYPE_ROOT_ARM64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";
pub const MBR_TYPE_FAT32_LBA: u8 = 0x0c;
pub const MBR_TYPE_LINUX: u8 = 0x83;

/// A half-open byte range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Region {
    pub start: u64,
    pub end: u64,
}

impl Region {
    pub fn new(start: u64, len: u64) -> Self {
        Region {
            start,
            end: start.saturating_add(len),
        }
    }
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub fn overlaps(&self, o: &Region) -> bool {
        !self.is_empty() && !o.is_empty() && self.start < o.end && o.start < self.end
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}..{} (bytes {}..{})",
            human(self.start),
            human(self.end),
            self.start,
            self.end
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartRole {
    Boot,
    Root,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartPlan {
    pub number: u32,
    pub role: PartRole,
    pub label: String,
    pub region: Region,
    pub bootable: bool,
    pub mbr_type: u8,
    pub gpt_type: &'static str,
    pub gpt_guid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobPlan {
    pub name: String,
    pub region: Region,
}

/// Identifiers fixed from a seed so two builds of the same inputs match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StableIds {
    pub mbr_signature: u32,
    pub disk_guid: String,
    pub root_uuid: String,
    pub root_hash_seed: String,
    pub boot_volume_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub table: TableKind,
    pub sector_size: u64,
    pub disk_size: u64,
    /// Bytes the partition table itself occupies.
    pub table_regions: Vec<(String, Region)>,
    pub partitions: Vec<PartPlan>,
    pub blobs: Vec<BlobPlan>,
    pub ids: StableIds,
}

impl Layout {
    pub fn part(&self, role: PartRole) -> &PartPlan {
        // Both roles are always planned.
        self.partitions
            .iter()
            .find(|p| p.role == role)
            .unwrap_or(&self.partitions[0])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
// Errors carry both byte ranges for the message; plans are made once per build.
#[allow(clippy::large_enum_variant)]
pub enum PlanError {
    #[error("{file}: blobs[{index}].offset: blob {name} at {blob} overlaps the {what} at {other} (fix: {fix})")]
    BlobOverlap {
        file: String,
        index: usize,
        name: String,
        blob: Region,
        what: String,
        other: Region,
        fix: String,
    },
    #[error("{file}: disk.first_partition: {offset} is not a multiple of disk.align {align} (fix: use a multiple such as 16MiB)")]
    Misaligned {
        file: String,
        offset: u64,
        align: u64,
    },
    #[error("{file}: disk.first_partition: partition 1 at {at} overlaps the {what} at {table} (fix: move it to 1MiB or later)")]
    PartitionOverTable {
        file: String,
        at: Region,
        what: String,
        table: Region,
    },
    #[error("{file}: disk: an MBR disk cannot exceed 2TiB, this one would be {size} bytes (fix: use a GPT or a smaller root)")]
    TooLargeForMbr { file: String, size: u64 },
    #[error("{file}: disk.align: {align} is not a positive multiple of 512 (fix: use 1MiB)")]
    BadAlign { file: String, align: u64 },
    #[error(
        "{file}: disk.boot_size: {size} is below the 33MiB a FAT32 volume needs (fix: use 64MiB)"
    )]
    BootTooSmall { file: String, size: u64 },
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Deterministic ids from any seed bytes (board, profile, cluster name).
pub fn stable_ids(seed: &[u8]) -> StableIds {
    let h = |tag: &str| -> [u8; 32] {
        let mut d = Sha256::new();
        d.update(b"hc-image stable id\0");
        d.update(tag.as_bytes());
        d.update([0]);
        d.update(seed);
        d.finalize().into()
    };
    let uuid = |tag: &str| {
        let mut b = h(tag);
        b[6] = (b[6] & 0x0f) | 0x40; // version 4 layout, derived not random
        b[8] = (b[8] & 0x3f) | 0x80;
        format_uuid(&b[..16])
    };
    let sig = h("mbr");
    let vol = h("fat");
    StableIds {
        mbr_signature: u32::from_le_bytes([sig[0], sig[1], sig[2], sig[3]]),
        disk_guid: uuid("disk"),
        root_uuid: uuid("root"),
        root_hash_seed: uuid("hash_seed"),
        boot_volume_id: u32::from_le_bytes([vol[0], vol[1], vol[2], vol[3]]),
    }
}

pub fn format_uuid(b: &[u8]) -> String {
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
    .to_ascii_uppercase()
}

/// Plans the disk for `board` with a root partition of at least `root_size` bytes.
#[allow(clippy::result_large_err)]
pub fn plan(
    board: &BoardSpec,
    file: &str,
    root_size: u64,
    ids: StableIds,
) -> Result<Layout, PlanError> {
    let d = &board.disk;
    let align = d.align.bytes();
    if align == 0 || align % SECTOR != 0 {
        return Err(PlanError::BadAlign {
            file: file.into(),
            align,
        });
    }
    if d.boot_size.bytes() < 33 * MIB {
        return Err(PlanError::BootTooSmall {
            file: file.into(),
            size: d.boot_size.bytes(),
        });
    }
    let first = d.first_partition.bytes();
    if first % align != 0 {
        return Err(PlanError::Misaligned {
            file: file.into(),
            offset: first,
            align,
        });
    }
    let table_regions: Vec<(String, Region)> = match d.table {
        TableKind::Mbr => vec![("MBR partition table".into(), MBR_TABLE)],
        TableKind::Gpt => vec![(
            "protective MBR, GPT header and entry array".into(),
            Region::new(0, GPT_PRIMARY_END),
        )],
    };
    let boot_region = Region::new(first, align_up(d.boot_size.bytes(), align));
    for (what, t) in &table_regions {
        if boot_region.overlaps(t) || boot_region.start < t.end {
            return Err(PlanError::PartitionOverTable {
                file: file.into(),
                at: boot_region,
                what: what.clone(),
                table: *t,
            });
        }
    }
    let root_region = Region::new(boot_region.end, align_up(root_size.max(align), align));
    let mut disk_size = root_region.end;
    let mut regions = table_regions.clone();
    if d.table == TableKind::Gpt {
        disk_size = align_up(disk_size + GPT_BACKUP_LEN, align);
        regions.push((
            "backup GPT".into(),
            Region::new(disk_size - GPT_BACKUP_LEN, GPT_BACKUP_LEN),
        ));
    } else if disk_size > (u32::MAX as u64) * SECTOR {
        return Err(PlanError::TooLargeForMbr {
            file: file.into(),
            size: disk_size,
        });
    }
    let guid = |n: u32| stable_ids(format!("{}:{n}", ids.disk_guid).as_bytes()).disk_guid;
    let partitions = vec![
        PartPlan {
            number: 1,
            role: PartRole::Boot,
            label: "HCBOOT".into(),
            region: boot_region,
            bootable: d.bootable == Bootable::Boot,
            mbr_type: MBR_TYPE_FAT32_LBA,
            gpt_type: if d.boot_is_esp {
                GPT_TYPE_ESP
            } else {
                GPT_TYPE_BASIC_DATA
            },
            gpt_guid: guid(1),
        },
        PartPlan {
            number: 2,
            role: PartRole::Root,
            label: "root".into(),
            region: root_region,
            bootable: d.bootable == Bootable::Root,
            mbr_type: MBR_TYPE_LINUX,
            gpt_type: match board.arch {
                crate::spec::Arch::Amd64 => GPT_TYPE_ROOT_X86_64,
                crate::spec::Arch::Arm64 => GPT_TYPE_ROOT_ARM64,
            },
            gpt_guid: guid(2),
        },
    ];
    let mut blobs: Vec<BlobPlan> = Vec::new();
    for (index, b) in board.blobs.iter().enumerate() {
        let blob = Region::new(b.offset.bytes(), b.size);
        let overlap = |what: String, other: Region, fix: &str| PlanError::BlobOverlap {
            file: file.into(),
            index,
            name: b.name.clone(),
            blob,
            what,
            other,
            fix: fix.into(),
        };
        for (what, t) in &regions {
            if blob.overlaps(t) {
                let fix = if d.table == TableKind::Gpt {
                    "use disk.table = \"mbr\" for this board, or move the blob past 17KiB"
                } else {
                    "move the blob past the first sector"
                };
                return Err(overlap(what.clone(), *t, fix));
            }
        }
        for p in &partitions {
            if blob.overlaps(&p.region) {
                return Err(overlap(
                    format!("partition {} ({})", p.number, p.label),
                    p.region,
                    "raise disk.first_partition above the blob's end",
                ));
            }
        }
        for other in &blobs {
            if blob.overlaps(&other.region) {
                return Err(overlap(
                    format!("blob {}", other.name),
                    other.region,
                    "give the blobs disjoint offsets",
                ));
            }
        }
        blobs.push(BlobPlan {
            name: b.name.clone(),
            region: blob,
        });
    }
    Ok(Layout {
        table: d.table,
        sector_size: SECTOR,
        disk_size,
        table_regions: regions,
        partitions,
        blobs,
        ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::{Size, KIB};
    use crate::spec::{Arch, BlobSpec, BootMethod, BootSpec, DiskSpec};
    use proptest::prelude::*;

    fn board(table: TableKind, first: u64, blobs: &[(u64, u64)]) -> BoardSpec {
        BoardSpec {
            schema: 1,
            name: "t".into(),
            description: String::new(),
            arch: Arch::Arm64,
            disk: DiskSpec {
                table,
                first_partition: Size(first),
                align: Size::mib(1),
                boot_size: Size::mib(64),
                boot_is_esp: false,
                bootable: Bootable::Root,
            },
            boot: BootSpec {
                method: BootMethod::Extlinux,
                dtb: None,
                console: "ttyS0".into(),
                kernel_args: vec![],
            },
            blobs: blobs
                .iter()
                .enumerate()
                .map(|(i, &(off, len))| BlobSpec {
                    name: format!("b{i}"),
                    package: "p".into(),
                    source: "s".into(),
                    version: "1".into(),
                    arch: "arm64".into(),
                    suite: "trixie".into(),
                    deb_sha256: "0".repeat(64),
                    path: "x".into(),
                    sha256: "0".repeat(64),
                    size: len,
                    offset: Size(off),
                })
                .collect(),
            armbian: None,
        }
    }

    fn ids() -> StableIds {
        stable_ids(b"test")
    }

    #[test]
    fn allwinner_spl_on_gpt_is_rejected_with_both_ranges() {
        let b = board(TableKind::Gpt, 16 * MIB, &[(8 * KIB, 844133)]);
        let e = plan(&b, "boards/pine64-lts.toml", 512 * MIB, ids()).expect_err("overlap");
        let msg = e.to_string();
        assert!(
            msg.starts_with("boards/pine64-lts.toml: blobs[0].offset:"),
            "{msg}"
        );
        assert!(msg.contains("bytes 8192..852325"), "{msg}");
        assert!(msg.contains("bytes 0..17408"), "{msg}");
    }

    #[test]
    fn allwinner_spl_on_mbr_and_rockchip_on_gpt_fit() {
        let b = board(TableKind::Mbr, 16 * MIB, &[(8 * KIB, 844133)]);
        plan(&b, "f", 512 * MIB, ids()).expect("pine64 MBR");
        let b = board(TableKind::Gpt, 16 * MIB, &[(32 * KIB, 9280000)]);
        plan(&b, "f", 512 * MIB, ids()).expect("rock64 GPT");
    }

    #[test]
    fn blob_into_partition_is_rejected() {
        let b = board(TableKind::Mbr, 4 * MIB, &[(32 * KIB, 9280000)]);
        let e = plan(&b, "f", 512 * MIB, ids()).expect_err("overlap");
        assert!(e.to_string().contains("partition 1 (HCBOOT)"), "{e}");
    }

    #[test]
    fn misaligned_first_partition_is_rejected() {
        let b = board(TableKind::Mbr, 16 * MIB + 512, &[]);
        assert!(matches!(
            plan(&b, "f", MIB, ids()),
            Err(PlanError::Misaligned { .. })
        ));
    }

    #[test]
    fn stable_ids_are_stable_and_distinct() {
        assert_eq!(stable_ids(b"a"), stable_ids(b"a"));
        assert_ne!(stable_ids(b"a").root_uuid, stable_ids(b"b").root_uuid);
        let u = stable_ids(b"a").root_uuid;
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    proptest! {
        #[test]
        fn layout_invariants(
            gpt in any::<bool>(),
            first_mib in 1u64..64,
            root in 1u64..(8 << 30),
            blobs in proptest::collection::vec((0u64..(64 * MIB), 1u64..(16 * MIB)), 0..4),
        ) {
            let table = if gpt { TableKind::Gpt } else { TableKind::Mbr };
            let b = board(table, first_mib * MIB, &blobs);
            match plan(&b, "f", root, ids()) {
                Ok(l) => {
                    let mut used: Vec<Region> = l.table_regions.iter().map(|(_, r)| *r).collect();
                    for p in &l.partitions {
                        prop_assert_eq!(p.region.start % MIB, 0);
                        prop_assert_eq!(p.region.len() % MIB, 0);
                        prop_assert!(p.region.end <= l.disk_size);
                        used.push(p.region);
                    }
                    prop_assert!(l.part(PartRole::Root).region.len() >= root);
                    for bl in &l.blobs {
                        used.push(bl.region);
                    }
                    for (i, a) in used.iter().enumerate() {
                        for c in &used[i + 1..] {
                            prop_assert!(!a.overlaps(c), "{a} overlaps {c}");
                        }
                    }
                }
                Err(PlanError::BlobOverlap { blob, other, .. }) => {
                    prop_assert!(blob.overlaps(&other));
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}
