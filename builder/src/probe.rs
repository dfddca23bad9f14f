// SPDX-License-Identifier: Apache-2.0
//! Reading filesystem superblocks without mounting (build host): enough to
//! name a filesystem, its label, id and used space.

use std::io::{Read, Seek, SeekFrom};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsInfo {
    /// "ext4", "ext2/3" or "vfat".
    pub kind: String,
    pub label: String,
    /// UUID for ext4, volume id for FAT.
    pub id: String,
    pub size: u64,
    /// Bytes in use, where the superblock says.
    pub used: Option<u64>,
}

fn le16(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}
fn le32(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// Identifies the filesystem starting at `offset`, or None.
pub fn probe<R: Read + Seek>(r: &mut R, offset: u64) -> std::io::Result<Option<FsInfo>> {
    let mut buf = vec![0u8; 2048];
    r.seek(SeekFrom::Start(offset))?;
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    if got < 2048 {
        return Ok(None);
    }
    let sb = &buf[1024..2048];
    if le16(sb, 0x38) == 0xef53 {
        let bs = 1024u64 << le32(sb, 0x18).min(6);
        let incompat = le32(sb, 0x60);
        let is64 = incompat & 0x80 != 0;
        let blocks = le32(sb, 0x04) | if is64 { le32(sb, 0x150) << 32 } else { 0 };
        let free = le32(sb, 0x0c) | if is64 { le32(sb, 0x158) << 32 } else { 0 };
        let extents = incompat & 0x40 != 0;
        let u = &sb[0x68..0x78];
        return Ok(Some(FsInfo {
            kind: if extents { "ext4" } else { "ext2/3" }.into(),
            label: text(&sb[0x78..0x88]),
            id: crate::plan::format_uuid(u).to_ascii_lowercase(),
            size: blocks * bs,
            used: Some(blocks.saturating_sub(free) * bs),
        }));
    }
    let bs = &buf[..512];
    if bs[510..512] == [0x55, 0xaa]
        && (&bs[0x52..0x5a] == b"FAT32   "
            || &bs[0x36..0x3b] == b"FAT16"
            || &bs[0x36..0x3b] == b"FAT12")
    {
        let fat32 = &bs[0x52..0x5a] == b"FAT32   ";
        let (id_at, label_at) = if fat32 { (0x43, 0x47) } else { (0x27, 0x2b) };
        let sector = le16(bs, 0x0b);
        let total = match le16(bs, 0x13) {
            0 => le32(bs, 0x20),
            n => n,
        };
        return Ok(Some(FsInfo {
            kind: "vfat".into(),
            label: text(&bs[label_at..label_at + 11]),
            id: format!("{:08X}", le32(bs, id_at)),
            size: total * sector,
            used: None,
        }));
    }
    Ok(None)
}
