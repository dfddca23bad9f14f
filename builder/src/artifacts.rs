// SPDX-License-Identifier: Apache-2.0
//! Release artifacts for a finished image: one sequential pass over the
//! sparse image file that hashes it, compresses it to `.zst` and writes a
//! bmaptool (format 2.0) block map. Runs on the build host, after the image
//! is complete and closed.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// bmap block size. Fixed (not the host fs block size) so the bmap depends
/// only on the image bytes.
const BLOCK: u64 = 4096;
const BLOCK_USIZE: usize = BLOCK as usize;
/// Read/feed granularity. Every window is fed to zstd whole, so the stream
/// is cut the same way whatever the file's extent layout.
const WINDOW: usize = 4 << 20;
/// Zero-initialised, so it lives in .bss: hole spans cost no reads.
static ZEROS: [u8; WINDOW] = [0; WINDOW];
const ZSTD_LEVEL: i32 = 3;
const BMAP_VERSION: &str = "2.0";
const SHA256_HEX_LEN: usize = 64;

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
/// - writes `zst_out`: zstd level 3, multithreaded (one worker per available
///   core), with content size and checksum in the frame header,
/// - writes `bmap_out` in bmaptool's format 2.0 with 4096-byte blocks: ranges
///   of blocks that are not all-zero, each with its sha256, and the
///   `BmapFileChecksum` computed the way `bmaptool copy` verifies it.
///
/// Mapped-ness is decided by content, not by the file's allocation, so both
/// outputs depend only on the image bytes (and on the zstd build).
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
    let mut enc = zstd::stream::Encoder::new(HashWriter::new(zst_file), ZSTD_LEVEL)
        .with_context(|| format!("starting zstd for {}", zst_out.display()))?;
    enc.multithread(workers.max(1))
        .context("setting zstd worker count")?;
    enc.include_checksum(true)
        .context("enabling zstd checksum")?;
    enc.include_contentsize(true)
        .context("enabling zstd content size")?;
    enc.set_pledged_src_size(Some(size))
        .context("setting zstd content size")?;

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
    let mut ranges = RangeTracker::default();
    let mut w0 = 0u64;
    while w0 < size {
        let len =
            usize::try_from((size - w0).min(WINDOW as u64)).context("computing window length")?;
        let w1 = w0 + len as u64;
        let (first_data, _) = extents.next_data(w0).context("seeking data")?;
        let piece = if first_data >= w1 {
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

/// sha256 (hex) of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    io::copy(&mut reader, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
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
struct Extents<'a> {
    file: &'a File,
    size: u64,
    /// False when the fs rejects SEEK_DATA: treat everything as data.
    seek_ok: bool,
    /// `(from, start, end)`: no data in `from..start`, data in `start..end`.
    cached: Option<(u64, u64, u64)>,
}

impl<'a> Extents<'a> {
    fn new(file: &'a File, size: u64) -> Self {
        Self {
            file,
            size,
            seek_ok: true,
            cached: None,
        }
    }

    /// First data span `start..end` with `start >= pos`; `(size, size)` if
    /// there is no more data.
    fn next_data(&mut self, pos: u64) -> io::Result<(u64, u64)> {
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

/// One bmap `<Range>`: blocks `first..=last` and their sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BmapRange {
    first: u64,
    last: u64,
    chksum: String,
}

/// Collects runs of non-zero blocks, hashing each run as it streams by.
#[derive(Default)]
struct RangeTracker {
    ranges: Vec<BmapRange>,
    mapped_blocks: u64,
    /// Open run: first block, last block, hash so far.
    open: Option<(u64, u64, Sha256)>,
}

impl RangeTracker {
    /// Scans `data`, which starts at block `first_block`. Only the image's
    /// final block may be short; bmaptool hashes it as the bytes that exist.
    fn scan(&mut self, first_block: u64, data: &[u8]) {
        let mut run_start: Option<usize> = None;
        for (i, block) in data.chunks(BLOCK_USIZE).enumerate() {
            // Slice equality is memcmp: far faster than a byte loop.
            let mapped = block != &ZEROS[..block.len()];
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
    fn extend(&mut self, first: u64, data: &[u8]) {
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

    fn close(&mut self) {
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
fn render_bmap(size: u64, ranges: &[BmapRange], mapped_blocks: u64) -> Vec<u8> {
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
fn overwrite(buf: &mut Vec<u8>, pos: usize, s: &[u8]) {
    let end = pos + s.len();
    if end > buf.len() {
        buf.resize(end, 0);
    }
    buf[pos..end].copy_from_slice(s);
}

/// bmaptools' `BmapHelpers.human_size`, output for output.
fn human_size(size: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::path::PathBuf;
    use std::process::Command;

    const BMAPTOOL_MISSING: &str = "install bmap-tools: apt-get install bmap-tools";

    /// Deterministic incompressible-ish bytes with no all-zero 4K block.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8 | 1
            })
            .collect()
    }

    fn write_at(path: &Path, offset: u64, data: &[u8]) {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open image for write");
        f.write_all_at(data, offset).expect("write image data");
    }

    /// Sparse image: data at odd offsets, an all-zero written region, a
    /// run ending mid-block, data across a window edge and a short tail block.
    fn make_sparse_image(dir: &Path) -> PathBuf {
        let path = dir.join("disk.img");
        let size = (64 << 20) + 2500;
        File::create(&path)
            .expect("create image")
            .set_len(size)
            .expect("size image");
        // Ends mid-block.
        write_at(&path, 0, &noise(1000, 1));
        // Odd offset, crosses the 4 MiB window edge at 8 MiB.
        write_at(&path, (5 << 20) + 123, &noise(3 << 20, 2));
        // Written but all zero: allocated, yet must stay unmapped.
        write_at(&path, 20 << 20, &vec![0u8; 1 << 20]);
        // Data, zero block, data inside one allocated extent.
        let mut mixed = noise(3 * 4096, 3);
        mixed[4096..8192].fill(0);
        write_at(&path, (21 << 20) + 4096 * 3, &mixed);
        // Last full block and the partial tail block.
        write_at(&path, (64 << 20) - 10, &noise(2510, 4));
        path
    }

    fn naive_sha256(path: &Path) -> String {
        hex::encode(Sha256::digest(std::fs::read(path).expect("read file")))
    }

    /// Non-zero 4K blocks, counted the slow obvious way.
    fn naive_mapped_bytes(bytes: &[u8]) -> u64 {
        bytes
            .chunks(4096)
            .filter(|b| b.iter().any(|&c| c != 0))
            .map(|b| b.len() as u64)
            .sum()
    }

    fn run(img: &Path, out: &Path, tag: &str) -> (ImageDigest, PathBuf, PathBuf) {
        let zst = out.join(format!("{tag}.img.zst"));
        let bmap = out.join(format!("{tag}.bmap"));
        let d = digest_and_compress(img, &zst, &bmap).expect("digest_and_compress");
        (d, zst, bmap)
    }

    fn bmaptool(args: &[&std::ffi::OsStr]) -> std::process::Output {
        match Command::new("bmaptool").args(args).output() {
            Ok(o) => o,
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!("{BMAPTOOL_MISSING}"),
            Err(e) => panic!("running bmaptool: {e}"),
        }
    }

    #[test]
    fn sparse_image_roundtrips_through_bmaptool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = make_sparse_image(dir.path());
        let bytes = std::fs::read(&img).expect("read image");
        let (d, zst, bmap) = run(&img, dir.path(), "a");

        assert_eq!(d.size, bytes.len() as u64);
        assert_eq!(d.sha256, naive_sha256(&img));
        assert_eq!(d.zst_sha256, naive_sha256(&zst));
        assert_eq!(d.bmap_sha256, naive_sha256(&bmap));
        assert_eq!(d.mapped_bytes, naive_mapped_bytes(&bytes));

        let zst_bytes = std::fs::read(&zst).expect("read zst");
        let decoded = zstd::stream::decode_all(&zst_bytes[..]).expect("decode zst");
        assert!(decoded == bytes, "zst does not decode to the image");
        // Content size is in the frame header.
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&zst_bytes).ok(),
            Some(Some(bytes.len() as u64))
        );

        let dest = dir.path().join("dest.img");
        let out = bmaptool(&[
            "copy".as_ref(),
            "--bmap".as_ref(),
            bmap.as_os_str(),
            zst.as_os_str(),
            dest.as_os_str(),
        ]);
        assert!(
            out.status.success(),
            "bmaptool copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(naive_sha256(&dest), d.sha256);

        // Deterministic: a second run gives the same bytes.
        let (d2, zst2, bmap2) = run(&img, dir.path(), "b");
        assert_eq!(d, d2);
        assert!(std::fs::read(&zst2).expect("read zst2") == zst_bytes);
        assert_eq!(
            std::fs::read(&bmap2).expect("read bmap2"),
            std::fs::read(&bmap).expect("read bmap")
        );
    }

    #[test]
    fn bmaptool_rejects_tampered_bmap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = make_sparse_image(dir.path());
        let (_, zst, bmap) = run(&img, dir.path(), "a");
        let text = std::fs::read_to_string(&bmap).expect("read bmap");
        // A single-character edit must break the file checksum.
        let tampered = text.replacen("<BlockSize> 4096 ", "<BlockSize> 4096\t", 1);
        assert_ne!(tampered, text);
        std::fs::write(&bmap, tampered).expect("write bmap");
        let dest = dir.path().join("dest.img");
        let out = bmaptool(&[
            "copy".as_ref(),
            "--bmap".as_ref(),
            bmap.as_os_str(),
            zst.as_os_str(),
            dest.as_os_str(),
        ]);
        assert!(!out.status.success(), "bmaptool accepted a tampered bmap");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
            "unexpected bmaptool error: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn output_depends_only_on_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sparse = make_sparse_image(dir.path());
        // Same bytes, fully allocated: no holes at all.
        let dense = dir.path().join("dense.img");
        std::fs::write(&dense, std::fs::read(&sparse).expect("read sparse")).expect("write dense");
        let (ds, zs, bs) = run(&sparse, dir.path(), "sparse");
        let (dd, zd, bd) = run(&dense, dir.path(), "dense");
        assert_eq!(ds, dd);
        assert!(std::fs::read(zs).expect("read zst") == std::fs::read(zd).expect("read zst"));
        assert_eq!(
            std::fs::read(bs).expect("read bmap"),
            std::fs::read(bd).expect("read bmap")
        );
    }

    #[test]
    fn zst_does_not_depend_on_worker_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = make_sparse_image(dir.path());
        let outs: Vec<Vec<u8>> = [1u32, 3]
            .iter()
            .map(|&w| {
                let zst = dir.path().join(format!("w{w}.zst"));
                let bmap = dir.path().join(format!("w{w}.bmap"));
                digest_and_compress_with(&img, &zst, &bmap, w).expect("digest_and_compress");
                std::fs::read(zst).expect("read zst")
            })
            .collect();
        assert!(outs[0] == outs[1], "zst differs between 1 and 3 workers");
    }

    /// Where allocation equals non-zero content (MiB-aligned data, holes
    /// elsewhere), `bmaptool create` must produce exactly our bytes.
    #[test]
    fn matches_bmaptool_create_byte_for_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("aligned.img");
        let size = (9 << 20) + 1000;
        File::create(&img)
            .expect("create image")
            .set_len(size)
            .expect("size image");
        write_at(&img, 0, &noise(1 << 20, 5));
        write_at(&img, 3 << 20, &noise(2 << 20, 6));
        write_at(&img, 9 << 20, &noise(1000, 7));
        let (_, _, ours) = run(&img, dir.path(), "ours");

        let theirs = dir.path().join("theirs.bmap");
        let out = bmaptool(&[
            "create".as_ref(),
            "-o".as_ref(),
            theirs.as_os_str(),
            img.as_os_str(),
        ]);
        assert!(
            out.status.success(),
            "bmaptool create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = std::fs::read_to_string(ours).expect("read ours");
        let theirs = std::fs::read_to_string(theirs).expect("read theirs");
        assert_eq!(ours, theirs);
    }

    /// Expected strings recorded from bmaptools 3.6 `BmapHelpers.human_size`
    /// (including its "%.1f" tie rounding and the EiB mislabel).
    #[test]
    fn human_size_matches_bmaptools() {
        let cases: [(u64, &str); 13] = [
            (1, "1 byte"),
            (2, "2 bytes"),
            (511, "511 bytes"),
            (512, "0.5 KiB"),
            (1280, "1.2 KiB"),
            (4096, "4.0 KiB"),
            ((9 << 20) + 1000, "9.0 MiB"),
            (3 * (1 << 20) + 4096, "3.0 MiB"),
            ((2 << 20) + (1 << 19) + 512, "2.5 MiB"),
            ((1 << 30) - 1, "1024.0 MiB"),
            ((5 << 30) + (1 << 28), "5.2 GiB"),
            (3 << 40, "3.0 TiB"),
            (1 << 62, "4194304.0 EiB"),
        ];
        for (size, want) in cases {
            assert_eq!(human_size(size), want, "size {size}");
        }
    }

    #[test]
    fn empty_image_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("empty.img");
        File::create(&img).expect("create image");
        let err = digest_and_compress(&img, &dir.path().join("e.zst"), &dir.path().join("e.bmap"))
            .expect_err("empty image must fail");
        assert!(err.to_string().contains("empty image"), "{err}");
    }

    #[test]
    fn missing_image_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("nope.img");
        let err = digest_and_compress(&img, &dir.path().join("n.zst"), &dir.path().join("n.bmap"))
            .expect_err("missing image must fail");
        assert!(format!("{err:#}").contains("opening"), "{err:#}");
        assert!(format!("{err:#}").contains("nope.img"), "{err:#}");
    }

    #[test]
    fn sha256_file_matches_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").expect("write");
        assert_eq!(
            sha256_file(&p).expect("hash"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
