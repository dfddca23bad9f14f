// SPDX-License-Identifier: Apache-2.0
//! The bmaptool (format 2.0) block map of an image: which 4 KiB blocks hold
//! data, written as bmaptool itself would write it.

use sha2::{Digest, Sha256};

/// bmap block size. Fixed (not the host fs block size) so the bmap depends
/// only on the image bytes.
pub(super) const BLOCK: u64 = 4096;
const BLOCK_USIZE: usize = BLOCK as usize;
static ZERO_BLOCK: [u8; BLOCK_USIZE] = [0; BLOCK_USIZE];
const BMAP_VERSION: &str = "2.0";
const SHA256_HEX_LEN: usize = 64;

/// One bmap `<Range>`: blocks `first..=last` and their sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BmapRange {
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) chksum: String,
}

/// Collects runs of non-zero blocks, hashing each run as it streams by.
#[derive(Default)]
pub(super) struct RangeTracker {
    pub(super) ranges: Vec<BmapRange>,
    pub(super) mapped_blocks: u64,
    /// Open run: first block, last block, hash so far.
    pub(super) open: Option<(u64, u64, Sha256)>,
    /// Blocks mapped even when all zero (`first..=last`): metadata whose
    /// zeros must overwrite what a used card holds.
    pub(super) keep: Vec<(u64, u64)>,
}

impl RangeTracker {
    /// Byte regions `(start, end)` that are mapped whatever they hold.
    pub(super) fn keeping(regions: &[(u64, u64)]) -> Self {
        RangeTracker {
            keep: regions
                .iter()
                .filter(|(s, e)| e > s)
                .map(|&(s, e)| (s / BLOCK, (e - 1) / BLOCK))
                .collect(),
            ..RangeTracker::default()
        }
    }

    /// Whether any kept block lies in `first..first + blocks`.
    pub(super) fn keeps_any(&self, first: u64, blocks: u64) -> bool {
        self.keep
            .iter()
            .any(|&(a, b)| a < first + blocks && b >= first)
    }

    /// Scans `data`, which starts at block `first_block`. Only the image's
    /// final block may be short; bmaptool hashes it as the bytes that exist.
    pub(super) fn scan(&mut self, first_block: u64, data: &[u8]) {
        let mut run_start: Option<usize> = None;
        for (i, block) in data.chunks(BLOCK_USIZE).enumerate() {
            // Slice equality is memcmp: far faster than a byte loop.
            let n = first_block + i as u64;
            let mapped = block != &ZERO_BLOCK[..block.len()]
                || self.keep.iter().any(|&(a, b)| (a..=b).contains(&n));
            match (mapped, run_start) {
                (true, None) => run_start = Some(i),
                (false, Some(s)) => {
                    self.extend(
                        first_block + s as u64,
                        &data[s * BLOCK_USIZE..i * BLOCK_USIZE],
                    );
                    self.close();
                    run_start = None;
                }
                _ => {}
            }
        }
        match run_start {
            Some(s) => self.extend(first_block + s as u64, &data[s * BLOCK_USIZE..]),
            // Window ended on a zero block, so no run continues into the next.
            None => self.close(),
        }
    }

    /// Appends mapped blocks starting at `first` (bytes in `data`), joining
    /// the open run when contiguous.
    pub(super) fn extend(&mut self, first: u64, data: &[u8]) {
        let blocks = (data.len() as u64).div_ceil(BLOCK);
        if let Some((_, last, _)) = &self.open {
            if *last + 1 != first {
                self.close();
            }
        }
        let (_, last, hasher) = self
            .open
            .get_or_insert_with(|| (first, first, Sha256::new()));
        hasher.update(data);
        *last = first + blocks - 1;
        self.mapped_blocks += blocks;
    }

    pub(super) fn close(&mut self) {
        if let Some((first, last, hasher)) = self.open.take() {
            self.ranges.push(BmapRange {
                first,
                last,
                chksum: hex::encode(hasher.finalize()),
            });
        }
    }
}

/// Header text, as bmaptool's `_BMAP_START_TEMPLATE` (BmapCreate.py, 3.x).
/// Kept byte-identical so our bmap matches `bmaptool create` output.
const BMAP_HEADER_COMMENT: &str = r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

"#;

/// Renders the bmap the way `BmapCreate.generate()` does: placeholders
/// first, then the mapped counts and finally the file checksum overwritten
/// in place (so padding spaces left by shorter values are kept).
pub(super) fn render_bmap(size: u64, ranges: &[BmapRange], mapped_blocks: u64) -> Vec<u8> {
    let blocks = size.div_ceil(BLOCK);
    let size_human = human_size(size);

    let mut x = String::from(BMAP_HEADER_COMMENT);
    x += &format!("<bmap version=\"{BMAP_VERSION}\">\n");
    x += &format!("    <!-- Image size in bytes: {size_human} -->\n");
    x += &format!("    <ImageSize> {size} </ImageSize>\n\n");
    x += "    <!-- Size of a block in bytes -->\n";
    x += &format!("    <BlockSize> {BLOCK} </BlockSize>\n\n");
    x += "    <!-- Count of blocks in the image file -->\n";
    x += &format!("    <BlocksCount> {blocks} </BlocksCount>\n\n");
    x += "    <!-- Count of mapped blocks: ";
    let mapped_human_pos = x.len();
    x += &format!(
        "{} or {}   -->\n",
        " ".repeat(size_human.len()),
        " ".repeat("100.0%".len())
    );
    x += "    <MappedBlocksCount> ";
    let mapped_count_pos = x.len();
    x += &format!(
        "{} </MappedBlocksCount>\n\n",
        " ".repeat(blocks.to_string().len())
    );
    x += "    <!-- Type of checksum used in this file -->\n";
    x += "    <ChecksumType> sha256 </ChecksumType>\n\n";
    x += "    <!-- The checksum of this bmap file. When it is calculated, the value of\n";
    x += "         the checksum has be zero (all ASCII \"0\" symbols).  -->\n";
    x += "    <BmapFileChecksum> ";
    let chksum_pos = x.len();
    x += &"0".repeat(SHA256_HEX_LEN);
    x += " </BmapFileChecksum>\n\n";
    x += "    <!-- The block map which consists of elements which may either be a\n";
    x += "         range of blocks or a single block. The 'chksum' attribute\n";
    x += "         (if present) is the checksum of this blocks range. -->\n";
    x += "    <BlockMap>\n";
    for r in ranges {
        if r.first == r.last {
            x += &format!(
                "        <Range chksum=\"{}\"> {} </Range>\n",
                r.chksum, r.first
            );
        } else {
            x += &format!(
                "        <Range chksum=\"{}\"> {}-{} </Range>\n",
                r.chksum, r.first, r.last
            );
        }
    }
    x += "    </BlockMap>\n";
    x += "</bmap>\n";

    let mut out = x.into_bytes();
    // Same float arithmetic and "%.1f" rounding as Python's.
    let percent = (mapped_blocks as f64 * 100.0) / blocks as f64;
    let mapped_human = format!("{} or {percent:.1}%", human_size(mapped_blocks * BLOCK));
    overwrite(&mut out, mapped_human_pos, mapped_human.as_bytes());
    overwrite(
        &mut out,
        mapped_count_pos,
        mapped_blocks.to_string().as_bytes(),
    );
    // bmaptool verifies by hashing the file with the checksum zeroed.
    let chksum = hex::encode(Sha256::digest(&out));
    overwrite(&mut out, chksum_pos, chksum.as_bytes());
    out
}

/// Python `f.seek(pos); f.write(s)` on a buffer: replaces bytes, extending
/// the buffer if `s` runs past its end.
pub(super) fn overwrite(buf: &mut Vec<u8>, pos: usize, s: &[u8]) {
    let end = pos + s.len();
    if end > buf.len() {
        buf.resize(end, 0);
    }
    buf[pos..end].copy_from_slice(s);
}

/// bmaptools' `BmapHelpers.human_size`, output for output.
pub(super) fn human_size(size: u64) -> String {
    if size == 1 {
        return "1 byte".to_string();
    }
    if size < 512 {
        return format!("{size} bytes");
    }
    let mut s = size as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        s /= 1024.0;
        if s < 1024.0 {
            return format!("{s:.1} {unit}");
        }
    }
    // bmaptools labels the TiB-scaled value EiB; copy it.
    format!("{s:.1} EiB")
}
