// SPDX-License-Identifier: Apache-2.0
//! Release artifacts for a finished image: one sequential pass over the
//! sparse image file that hashes it, compresses it to `.zst` and writes a
//! bmaptool (format 2.0) block map. Runs on the build host, after the image
//! is complete and closed.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod bmap;
pub mod seekable;
#[cfg(test)]
mod tests;

use bmap::{render_bmap, RangeTracker, BLOCK};

/// Read/feed granularity. Every window is fed to zstd whole, so the stream
/// is cut the same way whatever the file's extent layout.
const WINDOW: usize = 4 << 20;
/// Zero-initialised, so it lives in .bss: hole spans cost no reads.
static ZEROS: [u8; WINDOW] = [0; WINDOW];
const ZSTD_LEVEL: i32 = 3;

/// Digests of an image and of the artifacts written next to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDigest {
    /// Image size in bytes.
    pub size: u64,
    /// sha256 (hex) of every image byte, holes read as zeros.
    pub sha256: String,
    /// sha256 (hex) of the `.zst` file.
    pub zst_sha256: String,
    /// sha256 (hex) of the `.bmap` file as written.
    pub bmap_sha256: String,
    /// Bytes covered by the bmap's ranges (clipped to the image end): what
    /// `bmaptool copy` actually writes.
    pub mapped_bytes: u64,
}

/// One sequential pass over the image file `img` (a sparse file, possibly
/// several GiB, mostly holes) that:
/// - computes the sha256 of every byte of the image (holes read as zeros),
/// - writes `zst_out`: zstd level 3 in independent frames of 8 MiB with
///   content size and checksum, compressed on every core, and a seek table
///   (`seekable`) so `hc-image flash` skips the holes' frames,
/// - writes `bmap_out` in bmaptool's format 2.0 with 4096-byte blocks: ranges
///   of blocks that are not all-zero, each with its sha256, and the
///   `BmapFileChecksum` computed the way `bmaptool copy` verifies it.
///
/// Mapped-ness is decided by content, not by the file's allocation, so both
/// outputs depend only on the image bytes (and on the zstd build): blocks
/// that are not all zero, and the boot sector, reserved sectors and FATs of
/// every FAT partition whole (found from the image's own table), so a
/// block-map writer leaves no old card's bytes in a FAT.
pub fn digest_and_compress(img: &Path, zst_out: &Path, bmap_out: &Path) -> Result<ImageDigest> {
    let workers = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(1))
        .unwrap_or(1);
    digest_and_compress_with(img, zst_out, bmap_out, workers)
}

/// [`digest_and_compress`] with an explicit zstd worker count (>= 1; zstd's
/// multithreaded output does not depend on it).
fn digest_and_compress_with(
    img: &Path,
    zst_out: &Path,
    bmap_out: &Path,
    workers: u32,
) -> Result<ImageDigest> {
    let file = File::open(img).with_context(|| format!("opening {}", img.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("reading metadata of {}", img.display()))?
        .len();
    if size == 0 {
        // bmaptool refuses zero-sized images too.
        bail!("cannot make artifacts for empty image {}", img.display());
    }

    let zst_file =
        File::create(zst_out).with_context(|| format!("creating {}", zst_out.display()))?;
    let mut enc = seekable::Framed::new(HashWriter::new(zst_file), ZSTD_LEVEL, workers as usize);

    // The whole-image sha256 is serial and costs about as much CPU as zstd
    // on the holes, so it runs on its own thread; buffers cycle via a pool.
    let (piece_tx, piece_rx) = mpsc::sync_channel::<Piece>(POOL);
    let (pool_tx, pool_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..POOL {
        pool_tx
            .send(vec![0u8; WINDOW])
            .context("filling the buffer pool")?;
    }
    let (streamed, img_sha256) = std::thread::scope(|s| {
        let hasher = s.spawn(move || hash_pieces(piece_rx, pool_tx));
        let streamed = stream_windows(&file, size, &mut enc, piece_tx, pool_rx)
            .with_context(|| format!("compressing {} to {}", img.display(), zst_out.display()));
        let img_sha256 = hasher.join();
        (streamed, img_sha256)
    });
    let ranges = streamed?;
    let img_sha256 = img_sha256.map_err(|_| anyhow::anyhow!("hashing thread panicked"))?;

    let mut zst_writer = enc
        .finish()
        .with_context(|| format!("finishing {}", zst_out.display()))?;
    zst_writer
        .flush()
        .with_context(|| format!("flushing {}", zst_out.display()))?;
    let zst_sha256 = hex::encode(zst_writer.hasher.finalize());

    let bmap = render_bmap(size, &ranges.ranges, ranges.mapped_blocks);
    std::fs::write(bmap_out, &bmap).with_context(|| format!("writing {}", bmap_out.display()))?;
    // Same bytes as just written; hashing the buffer saves a re-read.
    let bmap_sha256 = hex::encode(Sha256::digest(&bmap));

    let mapped_bytes = ranges
        .ranges
        .iter()
        .map(|r| ((r.last + 1) * BLOCK).min(size) - r.first * BLOCK)
        .sum();

    Ok(ImageDigest {
        size,
        sha256: img_sha256,
        zst_sha256,
        bmap_sha256,
        mapped_bytes,
    })
}

/// Buffers in flight between the reader and the hashing thread.
const POOL: usize = 3;

/// One window for the hashing thread, in image order.
enum Piece {
    /// All-zero window of this length; hashed from `ZEROS`.
    Zeros(usize),
    /// Window buffer and its used length; the buffer goes back to the pool.
    Data(Vec<u8>, usize),
}

fn hash_pieces(pieces: mpsc::Receiver<Piece>, pool: mpsc::Sender<Vec<u8>>) -> String {
    let mut hasher = Sha256::new();
    for piece in pieces {
        match piece {
            Piece::Zeros(len) => hasher.update(&ZEROS[..len]),
            Piece::Data(buf, len) => {
                hasher.update(&buf[..len]);
                // The reader may already have stopped (error); nothing to do.
                let _ = pool.send(buf);
            }
        }
    }
    hex::encode(hasher.finalize())
}

/// Reads the image window by window, feeding zstd and the hashing thread
/// and collecting the bmap ranges.
fn stream_windows<W: Write>(
    file: &File,
    size: u64,
    enc: &mut W,
    pieces: mpsc::SyncSender<Piece>,
    pool: mpsc::Receiver<Vec<u8>>,
) -> Result<RangeTracker> {
    let mut extents = Extents::new(file, size);
    let mut ranges = RangeTracker::keeping(&crate::disk::fat_metadata_regions(&mut &*file));
    let mut w0 = 0u64;
    while w0 < size {
        let len =
            usize::try_from((size - w0).min(WINDOW as u64)).context("computing window length")?;
        let w1 = w0 + len as u64;
        let (first_data, _) = extents.next_data(w0).context("seeking data")?;
        let piece =
            if first_data >= w1 && !ranges.keeps_any(w0 / BLOCK, (len as u64).div_ceil(BLOCK)) {
                // Whole window is a hole: no read, no zero scan.
                ranges.close();
                enc.write_all(&ZEROS[..len])
                    .context("writing zstd output")?;
                Piece::Zeros(len)
            } else {
                let mut buf = pool.recv().context("waiting for the hashing thread")?;
                fill_window(file, &mut extents, w0, &mut buf[..len]).context("reading image")?;
                ranges.scan(w0 / BLOCK, &buf[..len]);
                enc.write_all(&buf[..len]).context("writing zstd output")?;
                Piece::Data(buf, len)
            };
        pieces
            .send(piece)
            .context("handing a window to the hashing thread")?;
        w0 = w1;
    }
    ranges.close();
    Ok(ranges)
}

/// Passes writes through and hashes exactly the bytes the inner writer took.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W> HashWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Fills `buf` with the image bytes at `w0..`: data spans are read, hole
/// spans are zeroed in memory.
fn fill_window(file: &File, extents: &mut Extents, w0: u64, buf: &mut [u8]) -> io::Result<()> {
    let w1 = w0 + buf.len() as u64;
    let mut pos = w0;
    while pos < w1 {
        let (start, end) = extents.next_data(pos)?;
        let start = start.min(w1);
        let end = end.min(w1);
        buf[(pos - w0) as usize..(start - w0) as usize].fill(0);
        if start < end {
            file.read_exact_at(&mut buf[(start - w0) as usize..(end - w0) as usize], start)?;
        }
        pos = end.max(start);
    }
    Ok(())
}

/// Walks the file's data extents with SEEK_DATA/SEEK_HOLE, remembering the
/// current one so each extent costs two lseeks however many windows it spans.
pub(crate) struct Extents<'a> {
    file: &'a File,
    size: u64,
    /// False when the fs rejects SEEK_DATA: treat everything as data.
    seek_ok: bool,
    /// `(from, start, end)`: no data in `from..start`, data in `start..end`.
    cached: Option<(u64, u64, u64)>,
}

impl<'a> Extents<'a> {
    pub(crate) fn new(file: &'a File, size: u64) -> Self {
        Self {
            file,
            size,
            seek_ok: true,
            cached: None,
        }
    }

    /// First data span `start..end` with `start >= pos`; `(size, size)` if
    /// there is no more data.
    pub(crate) fn next_data(&mut self, pos: u64) -> io::Result<(u64, u64)> {
        if !self.seek_ok {
            return Ok((pos, self.size));
        }
        if let Some((from, start, end)) = self.cached {
            if from <= pos && pos < end {
                return Ok((start.max(pos), end));
            }
        }
        let start = match crate::sys::lseek(self.file, pos, libc::SEEK_DATA) {
            Ok(s) => s.min(self.size),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => self.size,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.seek_ok = false;
                return Ok((pos, self.size));
            }
            Err(e) => return Err(e),
        };
        if start >= self.size {
            // Trailing hole: remember it so later windows skip the lseek.
            self.cached = Some((pos, self.size, self.size));
            return Ok((self.size, self.size));
        }
        let end = crate::sys::lseek(self.file, start, libc::SEEK_HOLE)?.min(self.size);
        self.cached = Some((pos, start, end));
        Ok((start, end))
    }
}
