// SPDX-License-Identifier: Apache-2.0
//! Partition tables and bootloader blobs (build host). Written last, after
//! the filesystems were read back, then read back themselves.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{bail, Context, Result};

use crate::io::sha256_hex;
use crate::plan::{Layout, SECTOR};
use crate::spec::TableKind;

/// GPT stores the first three UUID fields little-endian.
pub fn guid_bytes(uuid: &str) -> Result<[u8; 16]> {
    let hexs: String = uuid.chars().filter(|c| *c != '-').collect();
    let raw = hex::decode(&hexs).with_context(|| format!("parsing GUID {uuid}"))?;
    if raw.len() != 16 {
        bail!("GUID {uuid} is not 16 bytes");
    }
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    b[4..6].copy_from_slice(&[raw[5], raw[4]]);
    b[6..8].copy_from_slice(&[raw[7], raw[6]]);
    b[8..16].copy_from_slice(&raw[8..16]);
    Ok(b)
}

pub fn guid_string(b: &[u8; 16]) -> String {
    let raw = [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ];
    crate::plan::format_uuid(&raw)
}

/// Writes the partition table the layout describes.
pub fn write_table(f: &mut File, layout: &Layout) -> Result<()> {
    match layout.table {
        TableKind::Mbr => {
            let sig = layout.ids.mbr_signature.to_le_bytes();
            let mut mbr =
                mbrman::MBR::new_from(f, SECTOR as u32, sig).context("creating the MBR")?;
            for p in &layout.partitions {
                mbr[p.number as usize] = mbrman::MBRPartitionEntry {
                    boot: if p.bootable {
                        mbrman::BOOT_ACTIVE
                    } else {
                        mbrman::BOOT_INACTIVE
                    },
                    first_chs: mbrman::CHS::empty(),
                    sys: p.mbr_type,
                    last_chs: mbrman::CHS::empty(),
                    starting_lba: u32::try_from(p.region.start / SECTOR)
                        .context("partition start beyond MBR range")?,
                    sectors: u32::try_from(p.region.len() / SECTOR)
                        .context("partition size beyond MBR range")?,
                };
            }
            mbr.write_into(f).context("writing the MBR")?;
        }
        TableKind::Gpt => {
            let mut gpt = gptman::GPT::new_from(f, SECTOR, guid_bytes(&layout.ids.disk_guid)?)
                .context("creating the GPT")?;
            for p in &layout.partitions {
                gpt[p.number] = gptman::GPTPartitionEntry {
                    partition_type_guid: guid_bytes(p.gpt_type)?,
                    unique_partition_guid: guid_bytes(&p.gpt_guid)?,
                    starting_lba: p.region.start / SECTOR,
                    ending_lba: p.region.end / SECTOR - 1,
                    attribute_bits: 0,
                    partition_name: p.label.as_str().into(),
                };
            }
            gpt.write_into(f).context("writing the GPT")?;
            gptman::GPT::write_protective_mbr_into(f, SECTOR)
                .context("writing the protective MBR")?;
        }
    }
    Ok(())
}

/// One partition as read back from a disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundPart {
    pub number: u32,
    pub start: u64,
    pub size: u64,
    /// MBR type byte as hex, or the GPT type GUID.
    pub kind: String,
    pub bootable: bool,
    pub name: String,
}

/// Reads whichever table the disk has: GPT when a protective MBR says so.
/// `(start, end)` byte regions of the boot sector, reserved sectors and FATs
/// of every FAT partition in a disk image (none when it has no table or a
/// partition's first sector cannot be read).
pub fn fat_metadata_regions<R: Read + Seek>(r: &mut R) -> Vec<(u64, u64)> {
    let Ok((_, parts)) = read_table(r) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in parts {
        let mut bs = [0u8; 512];
        if r.seek(SeekFrom::Start(p.start)).is_err() || r.read_exact(&mut bs).is_err() {
            continue;
        }
        if let Some(len) = crate::fs::fat_metadata_len(&bs) {
            out.push((p.start, p.start + len.min(p.size)));
        }
    }
    out
}

pub fn read_table<R: Read + Seek>(r: &mut R) -> Result<(TableKind, Vec<FoundPart>)> {
    let mut sector = [0u8; 512];
    r.seek(SeekFrom::Start(0)).context("seeking to sector 0")?;
    r.read_exact(&mut sector).context("reading sector 0")?;
    if sector[510..512] != [0x55, 0xaa] {
        bail!("no partition table (sector 0 lacks the 55AA signature)");
    }
    if sector[446 + 4] == 0xee {
        let gpt = gptman::GPT::read_from(r, SECTOR).context("reading the GPT")?;
        let parts = gpt
            .iter()
            .filter(|(_, e)| e.is_used())
            .map(|(n, e)| FoundPart {
                number: n,
                start: e.starting_lba * SECTOR,
                size: (e.ending_lba + 1 - e.starting_lba) * SECTOR,
                kind: guid_string(&e.partition_type_guid),
                bootable: false,
                name: e.partition_name.as_str().to_string(),
            })
            .collect();
        return Ok((TableKind::Gpt, parts));
    }
    let mbr = mbrman::MBR::read_from(r, SECTOR as u32).context("reading the MBR")?;
    let parts = mbr
        .iter()
        .filter(|(_, e)| e.is_used())
        .map(|(n, e)| FoundPart {
            number: n as u32,
            start: u64::from(e.starting_lba) * SECTOR,
            size: u64::from(e.sectors) * SECTOR,
            kind: format!("0x{:02x}", e.sys),
            bootable: e.is_active(),
            name: String::new(),
        })
        .collect();
    Ok((TableKind::Mbr, parts))
}

/// Writes each blob at its offset.
pub fn write_blobs(f: &mut File, layout: &Layout, blobs: &[Vec<u8>]) -> Result<()> {
    for (plan, data) in layout.blobs.iter().zip(blobs) {
        f.seek(SeekFrom::Start(plan.region.start))
            .with_context(|| format!("seeking to blob {} at {}", plan.name, plan.region.start))?;
        f.write_all(data).with_context(|| {
            format!("writing blob {} at offset {}", plan.name, plan.region.start)
        })?;
    }
    Ok(())
}

/// Reads back the table and blobs and compares them with the plan.
pub fn verify_table_and_blobs(f: &mut File, layout: &Layout, blob_sha: &[String]) -> Result<()> {
    let (kind, parts) = read_table(f)?;
    if kind != layout.table {
        bail!("read back a {kind:?} table, planned {:?}", layout.table);
    }
    for p in &layout.partitions {
        let Some(found) = parts.iter().find(|x| x.number == p.number) else {
            bail!("partition {} missing after writing the table", p.number);
        };
        if found.start != p.region.start || found.size != p.region.len() {
            bail!(
                "partition {} read back at {}+{}, planned {}+{}",
                p.number,
                found.start,
                found.size,
                p.region.start,
                p.region.len()
            );
        }
    }
    for (plan, want) in layout.blobs.iter().zip(blob_sha) {
        let mut buf = vec![0u8; plan.region.len() as usize];
        f.seek(SeekFrom::Start(plan.region.start))
            .context("seeking to a blob")?;
        f.read_exact(&mut buf)
            .with_context(|| format!("reading blob {} back", plan.name))?;
        let got = sha256_hex(&buf);
        if &got != want {
            bail!(
                "blob {} read back with sha256 {got}, expected {want}",
                plan.name
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_byte_order_round_trips() {
        let g = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
        let b = guid_bytes(g).expect("guid");
        assert_eq!(&b[..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(guid_string(&b), g);
    }
}
