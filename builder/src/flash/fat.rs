// SPDX-License-Identifier: Apache-2.0
//! FAT metadata the block map may leave out. Images built before the
//! builder mapped HCBOOT's FATs whole (and bmaps made by other tools from
//! content) leave the all-zero tail of a FAT unmapped, so on a used card
//! that tail would keep the old card's bytes and `fsck.vfat` finds
//! clusters "in use" with garbage chains. The reserved sectors and FATs of
//! every FAT partition in the image are therefore written whole, zeros
//! included (about 1 MiB for HCBOOT).

use std::io::Cursor;

use super::bmap::Range;

/// Image bytes needed to find the FAT partitions: the table (first MiB),
/// then each partition's first sector.
pub const TABLE_BYTES: u64 = 1 << 20;
/// Partitions starting past this are not looked at (HCBOOT is first).
pub const MAX_START: u64 = 256 << 20;

/// Where the partitions we look at start, from the image's first MiB.
pub fn starts(head: &[u8]) -> Vec<u64> {
    match crate::disk::read_table(&mut Cursor::new(head)) {
        Ok((_, parts)) => parts
            .iter()
            .map(|p| p.start)
            .filter(|&s| s <= MAX_START)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `(start, end)` byte regions of the boot sector, reserved sectors and
/// FATs of each FAT partition whose first sector lies in `prefix`.
pub fn metadata(prefix: &[u8]) -> Vec<(u64, u64)> {
    crate::disk::fat_metadata_regions(&mut Cursor::new(prefix))
}

/// `ranges` plus the parts of `regions` (widened to `block`s, clipped to
/// `size`) they do not cover, as ranges without a hash: written whole and
/// hashed as written.
pub fn add_regions(ranges: &[Range], regions: &[(u64, u64)], block: u64, size: u64) -> Vec<Range> {
    let mut out = ranges.to_vec();
    for &(s, e) in regions {
        let (s, e) = (
            s / block * block,
            e.div_ceil(block).saturating_mul(block).min(size),
        );
        let mut pos = s;
        for r in ranges.iter().filter(|r| r.end > s && r.start < e) {
            if r.start > pos {
                out.push(Range::unhashed(pos, r.start));
            }
            pos = pos.max(r.end);
        }
        if pos < e {
            out.push(Range::unhashed(pos, e));
        }
    }
    out.sort_by_key(|r| r.start);
    // Two regions may have added the same gap.
    out.dedup_by(|b, a| a.start == b.start && a.end == b.end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64, h: bool) -> Range {
        Range {
            start,
            end,
            sha256: h.then_some([1; 32]),
        }
    }

    #[test]
    fn regions_fill_only_the_gaps() {
        let ranges = [
            r(0, 4096, true),
            r(8192, 12288, true),
            r(40960, 45056, true),
        ];
        let out = add_regions(&ranges, &[(5000, 30000)], 4096, 1 << 20);
        assert_eq!(
            out.iter()
                .map(|x| (x.start, x.end, x.sha256.is_some()))
                .collect::<Vec<_>>(),
            vec![
                (0, 4096, true),
                (4096, 8192, false),
                (8192, 12288, true),
                (12288, 32768, false),
                (40960, 45056, true)
            ]
        );
        assert_eq!(
            add_regions(&ranges, &[(0, 4096)], 4096, 1 << 20),
            ranges.to_vec()
        );
    }

    #[test]
    fn finds_the_fat_tables_of_a_real_fat32() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fat = dir.path().join("fat");
        let st = std::process::Command::new("mkfs.vfat")
            .args(["-F", "32", "-S", "512", "-C"])
            .arg(&fat)
            .arg("65536")
            .output()
            .expect("mkfs.vfat (apt-get install dosfstools)");
        assert!(st.status.success());
        let part = std::fs::read(&fat).expect("read");
        // An MBR with one partition at 1 MiB.
        let mut img = vec![0u8; 1 << 20];
        img[446 + 4] = 0x0c;
        img[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        img[446 + 12..446 + 16].copy_from_slice(&((part.len() / 512) as u32).to_le_bytes());
        img[510] = 0x55;
        img[511] = 0xaa;
        assert_eq!(starts(&img), vec![1 << 20]);
        img.extend_from_slice(&part[..4096]);
        let m = metadata(&img);
        let reserved = u64::from(u16::from_le_bytes([part[14], part[15]]));
        let fatsz = u64::from(u32::from_le_bytes([part[36], part[37], part[38], part[39]]));
        assert_eq!(m, vec![(1 << 20, (1 << 20) + (reserved + 2 * fatsz) * 512)]);
        assert!(metadata(&img[..1 << 20]).is_empty());
    }
}
