// SPDX-License-Identifier: Apache-2.0
//! The write: the first MiB of the device zeroed first, every mapped range
//! outside it written as the windows arrive, a sync, and only then the
//! first MiB (partition table, boot loader), and a sync. Interrupted at any
//! point before the end, the card has no partition table and cannot boot.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::bmap::Range;
use super::source::Window;

/// The part of the card written last (partition table, boot loader).
pub const HEAD: u64 = 1 << 20;

/// Where bytes go: the device, or a recorder in tests.
pub trait Sink {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn sync(&self) -> io::Result<()>;
}

impl Sink for File {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_all()
    }
}

/// The device written with `O_DIRECT` where it can be: no copy into the
/// page cache (on a loop device that halved the write time), and the sync
/// at the end does not start gigabytes of writeback at once. Data is copied
/// into an aligned bounce buffer; what cannot go direct (an unaligned
/// offset or length, or a device that refuses O_DIRECT) goes through the
/// ordinary descriptor.
pub struct Direct<'a> {
    direct: Option<File>,
    buffered: &'a File,
    bounce: RefCell<Aligned>,
    /// Cleared after the first EINVAL: the rest goes buffered.
    ok: Cell<bool>,
}

/// Alignment of direct I/O: offsets, lengths and memory (4 KiB covers 512
/// and 4096-byte logical blocks).
pub const ALIGN: usize = 4096;
const BOUNCE: usize = 4 << 20;

/// `len` bytes of memory starting on an [`ALIGN`] boundary, as O_DIRECT
/// wants (a plain Vec is only 16-byte aligned).
pub struct Aligned {
    raw: Vec<u8>,
    at: usize,
    len: usize,
}

impl Aligned {
    pub fn new(len: usize) -> Aligned {
        let raw = vec![0u8; len + ALIGN];
        let at = raw.as_ptr().align_offset(ALIGN);
        Aligned { raw, at, len }
    }

    pub fn get(&mut self) -> &mut [u8] {
        &mut self.raw[self.at..self.at + self.len]
    }
}

impl<'a> Direct<'a> {
    pub fn open(path: &Path, buffered: &'a File) -> Direct<'a> {
        let direct = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map_err(|e| tracing::debug!("no O_DIRECT on {}: {e}", path.display()))
            .ok();
        Direct {
            direct,
            buffered,
            bounce: RefCell::new(Aligned::new(BOUNCE)),
            ok: Cell::new(true),
        }
    }

    /// The O_DIRECT descriptor (read and write), for the read-back.
    pub fn direct(&self) -> Option<&File> {
        self.direct.as_ref()
    }

    fn write_direct(&self, f: &File, data: &[u8], offset: u64) -> io::Result<()> {
        let mut bounce = self.bounce.borrow_mut();
        let bounce = bounce.get();
        let mut pos = 0;
        while pos < data.len() {
            let n = (data.len() - pos).min(BOUNCE);
            let b = &mut bounce[..n];
            b.copy_from_slice(&data[pos..pos + n]);
            f.write_all_at(b, offset + pos as u64)?;
            pos += n;
        }
        Ok(())
    }
}

impl Sink for Direct<'_> {
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let aligned = offset % ALIGN as u64 == 0 && data.len() % ALIGN == 0;
        if let (Some(f), true, true) = (&self.direct, aligned, self.ok.get()) {
            match self.write_direct(f, data, offset) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!("O_DIRECT write refused ({e}): writing buffered");
                    self.ok.set(false);
                }
                r => return r,
            }
        }
        self.buffered.write_all_at(data, offset)
    }
    fn sync(&self) -> io::Result<()> {
        if let Some(f) = &self.direct {
            f.sync_all()?;
        }
        self.buffered.sync_all()
    }
}

/// One piece of a window: image bytes `offset..offset+len` (at `at` in the
/// window's buffer) belonging to range `range`; `head` pieces are held
/// back for the final write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub offset: u64,
    pub len: usize,
    pub at: usize,
    pub range: usize,
    pub head: bool,
}

/// Cuts a window into the parts covered by `ranges` (sorted), starting the
/// search at `*cursor` (windows arrive in order) and splitting at the end
/// of the first MiB.
pub fn pieces(offset: u64, len: usize, ranges: &[Range], cursor: &mut usize) -> Vec<Piece> {
    let end = offset + len as u64;
    let mut out = Vec::new();
    while *cursor < ranges.len() && ranges[*cursor].end <= offset {
        *cursor += 1;
    }
    let mut i = *cursor;
    while i < ranges.len() && ranges[i].start < end {
        let s = ranges[i].start.max(offset);
        let e = ranges[i].end.min(end);
        let mut cuts = vec![(s, e)];
        if s < HEAD && HEAD < e {
            cuts = vec![(s, HEAD), (HEAD, e)];
        }
        for (a, b) in cuts {
            out.push(Piece {
                offset: a,
                len: (b - a) as usize,
                at: (a - offset) as usize,
                range: i,
                head: a < HEAD,
            });
        }
        i += 1;
    }
    out
}

/// The write in progress: per-range hashes and the held-back first MiB.
pub struct Writer<'a, S: Sink> {
    sink: &'a S,
    ranges: &'a [Range],
    /// Hash the data as it passes (else it was checked beforehand).
    hash: bool,
    hashers: Vec<Option<Sha256>>,
    /// Hash of each range as written (for the read-back).
    pub written: Vec<Option<[u8; 32]>>,
    remaining: Vec<u64>,
    head: Vec<u8>,
    cursor: usize,
    pub bytes: u64,
}

impl<'a, S: Sink> Writer<'a, S> {
    /// Zeroes the device's first MiB (`device_size` caps it) and syncs:
    /// from here on an older image on the card cannot boot either.
    pub fn start(
        sink: &'a S,
        ranges: &'a [Range],
        image_size: u64,
        device_size: u64,
        hash: bool,
    ) -> Result<Self> {
        let zero = vec![0u8; HEAD.min(device_size) as usize];
        sink.write_at(&zero, 0).context("zeroing the first MiB")?;
        sink.sync().context("syncing the zeroed first MiB")?;
        Ok(Writer {
            sink,
            ranges,
            hash,
            // Ranges without a bmap hash are always hashed as written.
            hashers: ranges
                .iter()
                .map(|r| (hash || r.sha256.is_none()).then(Sha256::new))
                .collect(),
            written: vec![None; ranges.len()],
            remaining: ranges.iter().map(Range::len).collect(),
            head: vec![0u8; HEAD.min(image_size) as usize],
            cursor: 0,
            bytes: 0,
        })
    }

    /// Writes the mapped parts of one window (head parts are kept).
    pub fn window(&mut self, w: &Window) -> Result<()> {
        for p in pieces(w.offset, w.len, self.ranges, &mut self.cursor) {
            let data = &w.buf[p.at..p.at + p.len];
            if p.head {
                self.head[p.offset as usize..p.offset as usize + p.len].copy_from_slice(data);
            } else {
                self.sink
                    .write_at(data, p.offset)
                    .with_context(|| format!("writing {} bytes at offset {}", p.len, p.offset))?;
            }
            if let Some(h) = &mut self.hashers[p.range] {
                h.update(data);
            }
            self.bytes += p.len as u64;
            self.remaining[p.range] -= p.len as u64;
            if self.remaining[p.range] == 0 {
                self.range_done(p.range)?;
            }
        }
        Ok(())
    }

    fn range_done(&mut self, i: usize) -> Result<()> {
        let Some(h) = self.hashers[i].take() else {
            return Ok(());
        };
        let got: [u8; 32] = h.finalize().into();
        let r = &self.ranges[i];
        if let Some(want) = r.sha256 {
            if want != got {
                bail!(
                    "image bytes {}..{} do not match the sha256 in the bmap (corrupted image \
                     or a bmap that is not its own)",
                    r.start,
                    r.end
                );
            }
        }
        self.written[i] = Some(got);
        Ok(())
    }

    /// After every window: checks all ranges arrived, syncs, writes the
    /// first MiB and syncs again. Returns the per-range hashes.
    pub fn finish(self) -> Result<Vec<Option<[u8; 32]>>> {
        if let Some(i) = self.remaining.iter().position(|&n| n != 0) {
            let r = &self.ranges[i];
            bail!(
                "the image ended before bytes {}..{} arrived",
                r.start,
                r.end
            );
        }
        let unhashed =
            |(r, w): (&Range, &Option<[u8; 32]>)| w.is_none() && (self.hash || r.sha256.is_none());
        if self.ranges.iter().zip(&self.written).any(unhashed) {
            bail!("internal error: a range was not hashed");
        }
        self.sink.sync().context("syncing the written data")?;
        if !self.head.is_empty() {
            self.sink
                .write_at(&self.head, 0)
                .context("writing the first MiB")?;
        }
        self.sink.sync().context("syncing the first MiB")?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const MIB: u64 = 1 << 20;

    fn r(start: u64, end: u64) -> Range {
        Range::unhashed(start, end)
    }

    #[test]
    fn pieces_follow_ranges_and_split_at_the_first_mib() {
        let ranges = [r(0, 4096), r(MIB - 4096, MIB + 8192), r(5 * MIB, 9 * MIB)];
        let mut cur = 0;
        let p = pieces(0, 4 * MIB as usize, &ranges, &mut cur);
        assert_eq!(
            p.iter()
                .map(|p| (p.offset, p.len, p.range, p.head))
                .collect::<Vec<_>>(),
            vec![
                (0, 4096, 0, true),
                (MIB - 4096, 4096, 1, true),
                (MIB, 8192, 1, false)
            ]
        );
        let p = pieces(4 * MIB, 4 * MIB as usize, &ranges, &mut cur);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].offset, p[0].len, p[0].at),
            (5 * MIB, 3 * MIB as usize, MIB as usize)
        );
        assert_eq!(cur, 2);
        let p = pieces(8 * MIB, 4 * MIB as usize, &ranges, &mut cur);
        assert_eq!((p[0].offset, p[0].len), (8 * MIB, MIB as usize));
        assert!(pieces(12 * MIB, 100, &ranges, &mut cur).is_empty());
    }

    /// Records every write and sync in order.
    #[derive(Default)]
    struct Recorder(RefCell<Vec<(String, u64, usize)>>);

    impl Sink for Recorder {
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            let kind = if buf.iter().all(|&b| b == 0) {
                "zero"
            } else {
                "data"
            };
            self.0.borrow_mut().push((kind.into(), offset, buf.len()));
            Ok(())
        }
        fn sync(&self) -> io::Result<()> {
            self.0.borrow_mut().push(("sync".into(), 0, 0));
            Ok(())
        }
    }

    fn window(offset: u64, len: usize) -> Window {
        Window {
            offset,
            buf: vec![0xa5; len],
            len,
        }
    }

    #[test]
    fn first_mib_is_zeroed_first_and_written_last() {
        let ranges = [r(0, 8192), r(2 * MIB, 6 * MIB + 100)];
        let rec = Recorder::default();
        let mut w = Writer::start(&rec, &ranges, 6 * MIB + 100, 64 * MIB, true).expect("start");
        // Windows as a decompressor delivers them: 4 MiB aligned.
        w.window(&window(0, 4 * MIB as usize)).expect("w0");
        w.window(&window(4 * MIB, 2 * MIB as usize + 100))
            .expect("w1");
        let hashes = w.finish().expect("finish");
        assert!(hashes.iter().all(Option::is_some));
        let log = rec.0.into_inner();
        assert_eq!(
            log,
            vec![
                ("zero".into(), 0, MIB as usize),
                ("sync".into(), 0, 0),
                ("data".into(), 2 * MIB, 2 * MIB as usize),
                ("data".into(), 4 * MIB, 2 * MIB as usize + 100),
                ("sync".into(), 0, 0),
                ("data".into(), 0, MIB as usize),
                ("sync".into(), 0, 0),
            ]
        );
        // Every data write but the last ends on a 4 MiB boundary or at a
        // range end; none straddles the first MiB.
        for (_, off, len) in &log[2..4] {
            let end = off + *len as u64;
            assert!(end % (4 * MIB) == 0 || ranges.iter().any(|r| r.end == end));
            assert!(*off >= MIB);
        }
    }

    #[test]
    fn a_range_that_does_not_match_the_bmap_stops_before_the_first_mib() {
        let mut ranges = vec![r(0, 4096), r(2 * MIB, 2 * MIB + 4096)];
        ranges[1].sha256 = Some([0u8; 32]);
        let rec = Recorder::default();
        let mut w = Writer::start(&rec, &ranges, 3 * MIB, 64 * MIB, true).expect("start");
        let e = w
            .window(&window(0, 3 * MIB as usize))
            .expect_err("hash mismatch");
        assert!(format!("{e}").contains("do not match"), "{e}");
        let log = rec.0.into_inner();
        // Only the zeroing touched the first MiB.
        assert!(
            log.iter().all(|(k, off, _)| !(k == "data" && *off < MIB)),
            "{log:?}"
        );
    }

    #[test]
    fn a_short_image_is_an_error_not_a_bootable_card() {
        let ranges = [r(0, 4096), r(2 * MIB, 3 * MIB)];
        let rec = Recorder::default();
        let mut w = Writer::start(&rec, &ranges, 3 * MIB, 64 * MIB, false).expect("start");
        w.window(&window(0, 2 * MIB as usize + 10)).expect("w0");
        assert!(w.finish().is_err());
        let log = rec.0.borrow();
        let at_zero: Vec<_> = log
            .iter()
            .filter(|(k, o, _)| k != "sync" && *o == 0)
            .collect();
        assert_eq!(at_zero, vec![&("zero".to_string(), 0, MIB as usize)]);
    }

    #[test]
    fn direct_writes_aligned_and_unaligned_pieces_alike() {
        // On the checkout's disk, not /tmp: tmpfs refuses O_DIRECT, and the
        // fallback alone would be tested. (`target` may be elsewhere:
        // scripts/test keeps it in the cache.)
        let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
        std::fs::create_dir_all(base).expect("mkdir target");
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        let p = dir.path().join("dev");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .expect("create");
        f.set_len(16 * MIB).expect("size");
        let d = Direct::open(&p, &f);
        let a: Vec<u8> = (0..5 * MIB as usize + 8192)
            .map(|i| (i % 253) as u8)
            .collect();
        let b: Vec<u8> = (0..1000).map(|i| (i % 7) as u8 + 1).collect();
        d.write_at(&a, 4096).expect("aligned");
        d.write_at(&b, 12 * MIB + 3).expect("unaligned");
        d.sync().expect("sync");
        let mut got = vec![0u8; a.len()];
        f.read_exact_at(&mut got, 4096).expect("read");
        assert!(got == a);
        let mut got = vec![0u8; b.len()];
        f.read_exact_at(&mut got, 12 * MIB + 3).expect("read");
        assert_eq!(got, b);
    }
}
