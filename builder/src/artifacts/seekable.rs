// SPDX-License-Identifier: Apache-2.0
//! The `.img.zst` layout: independent zstd frames of [`FRAME`] image bytes
//! and, last, zstd's seek table (the "seekable format" of zstd's contrib:
//! a skippable frame that plain `zstd -d` and bmaptool pass over). With the
//! table, `hc-image flash` decompresses only the frames that hold mapped
//! blocks, on every core; any zstd reader still sees one stream.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::thread::JoinHandle;

/// Image bytes per frame: a multiple of the flash window (4 MiB), small
/// enough that a hole between two partitions is skipped whole.
pub const FRAME: usize = 8 << 20;

/// The largest frame read through the table (others stream).
const MAX_FRAME: u64 = 64 << 20;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
const FOOTER: u64 = 9;

/// One frame: where it is in the file and which image bytes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub file_offset: u64,
    pub compressed: u64,
    pub image_offset: u64,
    pub len: u64,
}

type Job = JoinHandle<io::Result<Vec<u8>>>;

/// Writes frames as [`FRAME`]-byte pieces fill, compressing up to `workers`
/// of them at once; the output does not depend on `workers`.
pub struct Framed<W: Write> {
    out: W,
    level: i32,
    workers: usize,
    buf: Vec<u8>,
    jobs: VecDeque<(Job, u32)>,
    table: Vec<(u32, u32)>,
}

impl<W: Write> Framed<W> {
    pub fn new(out: W, level: i32, workers: usize) -> Self {
        Framed {
            out,
            level,
            workers: workers.max(1),
            buf: Vec::with_capacity(FRAME),
            jobs: VecDeque::new(),
            table: Vec::new(),
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(FRAME));
        let len = data.len() as u32;
        let level = self.level;
        let job = std::thread::spawn(move || -> io::Result<Vec<u8>> {
            let mut c = zstd::bulk::Compressor::new(level)?;
            c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
            c.compress(&data)
        });
        self.jobs.push_back((job, len));
        while self.jobs.len() >= self.workers {
            self.collect_one()?;
        }
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let Some((job, len)) = self.jobs.pop_front() else {
            return Ok(());
        };
        let z = job
            .join()
            .map_err(|_| io::Error::other("a zstd thread panicked"))??;
        self.out.write_all(&z)?;
        let clen = u32::try_from(z.len()).map_err(|_| io::Error::other("frame over 4 GiB"))?;
        self.table.push((clen, len));
        Ok(())
    }

    /// Writes the last frame and the seek table; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit()?;
        while !self.jobs.is_empty() {
            self.collect_one()?;
        }
        let n = u32::try_from(self.table.len()).map_err(|_| io::Error::other("too many frames"))?;
        let body = self.table.len() as u64 * 8 + FOOTER;
        let mut t = Vec::with_capacity(8 + body as usize);
        t.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        t.extend_from_slice(&(body as u32).to_le_bytes());
        for (c, d) in &self.table {
            t.extend_from_slice(&c.to_le_bytes());
            t.extend_from_slice(&d.to_le_bytes());
        }
        t.extend_from_slice(&n.to_le_bytes());
        // Descriptor: no per-frame checksums (each frame carries its own).
        t.push(0);
        t.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        self.out.write_all(&t)?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Framed<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(FRAME - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == FRAME {
            self.submit()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The frames of a seekable `.zst`, or `None` when it has no seek table
/// (any other zstd file) or the table does not add up to the file.
pub fn frames(f: &File) -> io::Result<Option<Vec<Frame>>> {
    let size = f.metadata()?.len();
    if size < FOOTER + 8 {
        return Ok(None);
    }
    let mut foot = [0u8; FOOTER as usize];
    f.read_exact_at(&mut foot, size - FOOTER)?;
    if u32_at(&foot, 5) != SEEKABLE_MAGIC {
        return Ok(None);
    }
    let n = u64::from(u32_at(&foot, 0));
    let entry = if foot[4] & 0x80 != 0 { 12 } else { 8 };
    let body = n * entry + FOOTER;
    let Some(start) = size.checked_sub(body + 8) else {
        return Ok(None);
    };
    let mut t = vec![0u8; (body + 8) as usize];
    f.read_exact_at(&mut t, start)?;
    if u32_at(&t, 0) != SKIPPABLE_MAGIC || u64::from(u32_at(&t, 4)) != body {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(n as usize);
    let (mut file_offset, mut image_offset) = (0u64, 0u64);
    for i in 0..n as usize {
        let e = 8 + i * entry as usize;
        let (c, d) = (u64::from(u32_at(&t, e)), u64::from(u32_at(&t, e + 4)));
        // Each frame is decompressed in memory: a table that claims huge
        // frames is not one of ours, and the file is streamed instead.
        if d > MAX_FRAME {
            return Ok(None);
        }
        out.push(Frame {
            file_offset,
            compressed: c,
            image_offset,
            len: d,
        });
        file_offset += c;
        image_offset += d;
    }
    Ok((file_offset == start).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_plain_zstd_reads_the_whole_stream() {
        let mut data = vec![0u8; FRAME * 2 + 12345];
        for (i, b) in data.iter_mut().enumerate().skip(FRAME + 100) {
            *b = (i % 251) as u8;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.zst");
        let mut w = Framed::new(File::create(&p).expect("create"), 3, 2);
        // Odd write sizes: frames are cut by count, not by call.
        for c in data.chunks(1_000_003) {
            w.write_all(c).expect("write");
        }
        w.finish().expect("finish");
        let f = File::open(&p).expect("open");
        let fr = frames(&f).expect("read").expect("a seek table");
        assert_eq!(fr.len(), 3);
        assert_eq!(fr[1].image_offset, FRAME as u64);
        assert_eq!(fr[2].len, 12345);
        let mut d = zstd::bulk::Decompressor::new().expect("decompressor");
        for x in &fr {
            let mut z = vec![0u8; x.compressed as usize];
            f.read_exact_at(&mut z, x.file_offset).expect("read frame");
            let got = d.decompress(&z, x.len as usize).expect("frame alone");
            let at = x.image_offset as usize;
            assert!(got == data[at..at + x.len as usize]);
        }
        let all = zstd::stream::decode_all(File::open(&p).expect("open")).expect("decode");
        assert!(all == data, "a plain zstd reader sees other bytes");

        // A table claiming a 1 GiB frame is not trusted: streamed instead.
        let z = zstd::bulk::compress(b"x", 3).expect("zstd");
        let mut f = z.clone();
        f.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        f.extend_from_slice(&(8u32 + 9).to_le_bytes());
        f.extend_from_slice(&(z.len() as u32).to_le_bytes());
        f.extend_from_slice(&(1u32 << 30).to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.push(0);
        f.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        let h = dir.path().join("huge.zst");
        std::fs::write(&h, &f).expect("write");
        assert_eq!(frames(&File::open(&h).expect("open")).expect("read"), None);
        // The same table with the true size is read.
        f[z.len() + 12..z.len() + 16].copy_from_slice(&1u32.to_le_bytes());
        std::fs::write(&h, &f).expect("write");
        assert_eq!(
            frames(&File::open(&h).expect("open"))
                .expect("read")
                .map(|v| v.len()),
            Some(1)
        );

        // Not seekable: a single-frame file.
        let q = dir.path().join("y.zst");
        std::fs::write(&q, zstd::bulk::compress(&data, 3).expect("zstd")).expect("write");
        assert_eq!(frames(&File::open(&q).expect("open")).expect("read"), None);
    }
}
