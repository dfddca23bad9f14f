// SPDX-License-Identifier: Apache-2.0
//! Growing the root partition to the end of the disk (device, first boot).
//! Only the partition table sectors are rewritten; the entry keeps its start,
//! so a power cut leaves either the old or the new table, both valid.

use std::io::{Read, Seek, SeekFrom, Write};

const SECTOR: u64 = 512;
const ALIGN: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grow {
    pub part: u32,
    pub start: u64,
    pub old_len: u64,
    pub new_len: u64,
    pub gpt: bool,
}

fn err(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

fn is_gpt<R: Read + Seek>(d: &mut R) -> std::io::Result<bool> {
    let mut s = [0u8; 512];
    d.seek(SeekFrom::Start(0))?;
    d.read_exact(&mut s)?;
    if s[510..512] != [0x55, 0xaa] {
        return Err(err("no partition table on the disk"));
    }
    Ok(s[446 + 4] == 0xee)
}

/// Start and length of partition `part` as the table says.
pub fn extent<R: Read + Seek>(d: &mut R, part: u32) -> std::io::Result<(u64, u64)> {
    if is_gpt(d)? {
        let t = gptman::GPT::read_from(d, SECTOR).map_err(|e| err(format!("reading GPT: {e}")))?;
        let e = &t[part];
        if !e.is_used() {
            return Err(err(format!("partition {part} does not exist")));
        }
        Ok((
            e.starting_lba * SECTOR,
            (e.ending_lba + 1 - e.starting_lba) * SECTOR,
        ))
    } else {
        let t = mbrman::MBR::read_from(d, SECTOR as u32)
            .map_err(|e| err(format!("reading MBR: {e}")))?;
        let e = &t[part as usize];
        if !e.is_used() {
            return Err(err(format!("partition {part} does not exist")));
        }
        Ok((
            u64::from(e.starting_lba) * SECTOR,
            u64::from(e.sectors) * SECTOR,
        ))
    }
}

/// What growing partition `part` to the disk's end would do; None if it
/// already ends within 1 MiB of the usable end (nothing to do).
pub fn plan<R: Read + Seek>(d: &mut R, disk_size: u64, part: u32) -> std::io::Result<Option<Grow>> {
    let gpt = is_gpt(d)?;
    // GPT keeps 33 sectors at the end for its backup.
    let usable_end = if gpt {
        disk_size - 33 * SECTOR
    } else {
        disk_size
    };
    let end = usable_end / ALIGN * ALIGN;
    let (start, old_len) = extent(d, part)?;
    if start + old_len + ALIGN > end {
        return Ok(None);
    }
    Ok(Some(Grow {
        part,
        start,
        old_len,
        new_len: end - start,
        gpt,
    }))
}

/// Rewrites the table so the partition ends where `g` says.
pub fn apply<D: Read + Write + Seek>(d: &mut D, g: &Grow) -> std::io::Result<()> {
    if g.gpt {
        let mut t =
            gptman::GPT::read_from(d, SECTOR).map_err(|e| err(format!("reading GPT: {e}")))?;
        // Moves the backup header and the last usable LBA to the disk's new end.
        t.header
            .update_from(d, SECTOR)
            .map_err(|e| err(format!("resizing GPT: {e}")))?;
        t[g.part].ending_lba = (g.start + g.new_len) / SECTOR - 1;
        t.write_into(d)
            .map_err(|e| err(format!("writing GPT: {e}")))?;
    } else {
        let mut t = mbrman::MBR::read_from(d, SECTOR as u32)
            .map_err(|e| err(format!("reading MBR: {e}")))?;
        t[g.part as usize].sectors =
            u32::try_from(g.new_len / SECTOR).map_err(|_| err("partition too large for an MBR"))?;
        t.write_into(d)
            .map_err(|e| err(format!("writing MBR: {e}")))?;
    }
    d.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn mbr_disk(size: u64) -> Cursor<Vec<u8>> {
        let mut c = Cursor::new(vec![0u8; size as usize]);
        let mut m = mbrman::MBR::new_from(&mut c, 512, [1, 2, 3, 4]).expect("mbr");
        m[1] = mbrman::MBRPartitionEntry {
            boot: mbrman::BOOT_INACTIVE,
            first_chs: mbrman::CHS::empty(),
            sys: 0x0c,
            last_chs: mbrman::CHS::empty(),
            starting_lba: 2048,
            sectors: 2048,
        };
        m[2] = mbrman::MBRPartitionEntry {
            boot: mbrman::BOOT_ACTIVE,
            first_chs: mbrman::CHS::empty(),
            sys: 0x83,
            last_chs: mbrman::CHS::empty(),
            starting_lba: 4096,
            sectors: 4096,
        };
        m.write_into(&mut c).expect("write");
        c
    }

    #[test]
    fn mbr_grows_once_to_the_aligned_end() {
        let size = 16 << 20;
        let mut d = mbr_disk(size);
        let g = plan(&mut d, size, 2)
            .expect("plan")
            .expect("something to do");
        assert_eq!(g.start, 2 << 20);
        assert_eq!(g.new_len, 14 << 20);
        apply(&mut d, &g).expect("apply");
        assert_eq!(plan(&mut d, size, 2).expect("plan"), None, "idempotent");
        let m = mbrman::MBR::read_from(&mut d, 512).expect("read");
        assert_eq!(m[2].sectors, (14 << 20) / 512);
        assert_eq!(m[1].sectors, 2048, "other partitions untouched");
    }

    #[test]
    fn gpt_grows_and_moves_its_backup() {
        let small = 8u64 << 20;
        let mut c = Cursor::new(vec![0u8; small as usize]);
        let mut t = gptman::GPT::new_from(&mut c, 512, [7; 16]).expect("gpt");
        t[1] = gptman::GPTPartitionEntry {
            partition_type_guid: [1; 16],
            unique_partition_guid: [2; 16],
            starting_lba: 2048,
            ending_lba: 8191,
            attribute_bits: 0,
            partition_name: "root".into(),
        };
        t.write_into(&mut c).expect("write");
        gptman::GPT::write_protective_mbr_into(&mut c, 512).expect("pmbr");
        // The card is bigger than the image.
        let big = 32u64 << 20;
        c.get_mut().resize(big as usize, 0);
        let g = plan(&mut c, big, 1).expect("plan").expect("grow");
        apply(&mut c, &g).expect("apply");
        let t = gptman::GPT::read_from(&mut c, 512).expect("read back");
        assert_eq!(
            (t[1].ending_lba + 1) * 512,
            (big - 33 * 512) / (1 << 20) * (1 << 20)
        );
        assert_eq!(t.header.backup_lba, big / 512 - 1);
        assert_eq!(plan(&mut c, big, 1).expect("plan"), None);
    }

    #[test]
    fn missing_partition_is_an_error() {
        let size = 16 << 20;
        let mut d = mbr_disk(size);
        assert!(plan(&mut d, size, 3).is_err());
    }
}
