// SPDX-License-Identifier: Apache-2.0
//! The image side of `flash`: what kind of file it is, its block map (the
//! `.bmap` beside it, or a sparse `.img`'s own data extents), the sums
//! published beside it, and a producer that hands the mapped bytes to the
//! writer in image order, window by window.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::bmap::{self, Bmap, Range};

/// Read/write granularity: large writes, aligned to this size.
pub const WINDOW: usize = 4 << 20;
use crate::artifacts::seekable::{self, Frame};
use crate::error::InputError;

/// How the image bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Raw,
    Zstd,
    Xz,
}

/// An image to flash and what we know about it before reading it.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub kind: Kind,
    /// Uncompressed size, when known before decompressing.
    pub size: Option<u64>,
    pub bmap: Option<(PathBuf, Bmap)>,
    /// The frames of a seekable `.zst` (what `hc-image build` writes).
    pub frames: Option<Vec<Frame>>,
}

fn input(path: &Path, problem: impl Into<String>, fix: impl Into<String>) -> InputError {
    InputError::new(path.display().to_string(), "image", problem, fix)
}

/// Sniffs the first bytes: zstd and xz magic, else a raw image.
pub fn detect(path: &Path) -> Result<Kind> {
    let mut f = File::open(path).map_err(|e| {
        input(
            path,
            format!("cannot be opened: {e}"),
            "give the path of a .img, .img.zst or .img.xz that hc-image build wrote",
        )
    })?;
    let mut magic = [0u8; 6];
    let n = crate::fs::read_full(&mut f, &mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(match &magic[..n] {
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Kind::Zstd,
        [0xfd, b'7', b'z', b'X', b'Z', 0] => Kind::Xz,
        _ => Kind::Raw,
    })
}

/// `X.img.zst` -> `X.img`; `X.img` -> `X.img`.
fn stem(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    for ext in [".zst", ".xz"] {
        if let Some(base) = s.strip_suffix(ext) {
            return PathBuf::from(base);
        }
    }
    path.to_path_buf()
}

/// The block map beside an image: `X.img.bmap`, else `X.bmap`.
pub fn bmap_beside(path: &Path) -> Option<PathBuf> {
    let img = stem(path);
    let mut cands = vec![PathBuf::from(format!("{}.bmap", img.display()))];
    if let Some(base) = img.to_string_lossy().strip_suffix(".img") {
        cands.push(PathBuf::from(format!("{base}.bmap")));
    }
    cands.into_iter().find(|p| p.is_file())
}

/// Reads and checks a bmap file; a bad one is an input error.
pub fn load_bmap(path: &Path) -> Result<Bmap> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    bmap::parse(&bytes).map_err(|e| {
        InputError::new(
            path.display().to_string(),
            "bmap",
            e.0,
            "use the .bmap written with the image (or remove it to write the whole image)",
        )
        .into()
    })
}

/// Uncompressed size from a zstd frame header (we write it; others may not).
fn zstd_size(path: &Path) -> Option<u64> {
    let mut f = File::open(path).ok()?;
    let mut head = [0u8; 32];
    let n = crate::fs::read_full(&mut f, &mut head).ok()?;
    zstd::zstd_safe::get_frame_content_size(&head[..n])
        .ok()
        .flatten()
}

/// Reads an xz multibyte integer.
fn xz_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let c = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(c & 0x7f) << (7 * i);
        if c & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Uncompressed size of an `.xz` file from the indexes of its streams
/// (walked from the end, as `xz --list` does).
pub fn xz_size(f: &mut File) -> Option<u64> {
    let mut end = f.seek(SeekFrom::End(0)).ok()?;
    let mut total = 0u64;
    while end > 0 {
        // Stream padding: zero bytes in groups of four.
        let mut word = [0u8; 4];
        f.read_exact_at(&mut word, end.checked_sub(4)?).ok()?;
        if word == [0; 4] {
            end -= 4;
            continue;
        }
        let mut footer = [0u8; 12];
        f.read_exact_at(&mut footer, end.checked_sub(12)?).ok()?;
        if &footer[10..12] != b"YZ" {
            return None;
        }
        let backward = (u64::from(u32::from_le_bytes(footer[4..8].try_into().ok()?)) + 1) * 4;
        let index_start = end.checked_sub(12 + backward)?;
        let mut index = vec![0u8; usize::try_from(backward).ok()?];
        f.read_exact_at(&mut index, index_start).ok()?;
        if index.first() != Some(&0) {
            return None;
        }
        let mut pos = 1;
        let records = xz_varint(&index, &mut pos)?;
        let mut blocks = 0u64;
        for _ in 0..records {
            let unpadded = xz_varint(&index, &mut pos)?;
            total = total.checked_add(xz_varint(&index, &mut pos)?)?;
            blocks = blocks.checked_add(unpadded.div_ceil(4) * 4)?;
        }
        end = index_start.checked_sub(blocks + 12)?;
    }
    Some(total)
}

impl Source {
    /// Identifies the image and loads its block map: `bmap_path` if given,
    /// else the one beside it.
    pub fn open(path: &Path, bmap_path: Option<&Path>) -> Result<Source> {
        let kind = detect(path)?;
        let bmap_path = bmap_path
            .map(Path::to_path_buf)
            .or_else(|| bmap_beside(path));
        let bmap = match bmap_path {
            Some(p) => {
                let b = load_bmap(&p)?;
                Some((p, b))
            }
            None => None,
        };
        let frames = match kind {
            Kind::Zstd => {
                let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
                seekable::frames(&f).with_context(|| format!("reading {}", path.display()))?
            }
            _ => None,
        };
        let size = match kind {
            Kind::Raw => Some(
                std::fs::metadata(path)
                    .with_context(|| format!("reading metadata of {}", path.display()))?
                    .len(),
            ),
            Kind::Zstd => match &frames {
                Some(f) => Some(f.iter().map(|f| f.len).sum()),
                None => zstd_size(path),
            },
            Kind::Xz => File::open(path).ok().and_then(|mut f| xz_size(&mut f)),
        };
        if let (Some(s), Some((p, b))) = (size, &bmap) {
            if s != b.image_size {
                return Err(InputError::new(
                    p.display().to_string(),
                    "ImageSize",
                    format!(
                        "the bmap is for a {}-byte image, {} holds {s} bytes",
                        b.image_size,
                        path.display()
                    ),
                    "use the .bmap written with this image",
                )
                .into());
            }
        }
        if size == Some(0) {
            return Err(input(path, "is empty", "rebuild the image").into());
        }
        Ok(Source {
            path: path.to_path_buf(),
            kind,
            size: size.or(bmap.as_ref().map(|(_, b)| b.image_size)),
            bmap,
            frames,
        })
    }

    /// The ranges to write: the bmap's, else a raw image's data extents
    /// (whole 4 KiB blocks), else everything.
    pub fn ranges(&self) -> Result<Vec<Range>> {
        if let Some((_, b)) = &self.bmap {
            return Ok(b.ranges.clone());
        }
        let size = self.size.ok_or_else(|| {
            input(
                &self.path,
                "its uncompressed size is unknown and no .bmap is beside it",
                "decompress it first, or create a bmap with `bmaptool create`",
            )
        })?;
        if self.kind != Kind::Raw {
            return Ok(vec![Range::unhashed(0, size)]);
        }
        let f =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        let mut ext = crate::artifacts::Extents::new(&f, size);
        let mut out: Vec<Range> = Vec::new();
        let mut pos = 0;
        while pos < size {
            let (s, e) = ext.next_data(pos).context("finding the image's data")?;
            if s >= size {
                break;
            }
            let (s, e) = (
                s / 4096 * 4096,
                e.div_ceil(4096).saturating_mul(4096).min(size),
            );
            match out.last_mut() {
                Some(last) if last.end >= s => last.end = last.end.max(e),
                _ => out.push(Range::unhashed(s, e)),
            }
            pos = e.max(pos + 1);
        }
        Ok(out)
    }

    /// A reader of the uncompressed image from its start.
    fn stream(&self) -> Result<Box<dyn Read + Send>> {
        let f =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        let r = BufReader::with_capacity(1 << 20, f);
        Ok(match self.kind {
            Kind::Raw => Box::new(r),
            Kind::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(r)
                    .with_context(|| format!("starting zstd on {}", self.path.display()))?,
            ),
            Kind::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        })
    }

    /// The first `len` bytes of the (uncompressed) image.
    pub fn read_prefix(&self, len: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(len).context("prefix length")?];
        let mut r = self.stream()?;
        let n = crate::fs::read_full(&mut r, &mut buf)
            .with_context(|| format!("reading the start of {}", self.path.display()))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Sends the image bytes covering `ranges` to `out` in order, as
    /// windows of at most [`WINDOW`] bytes that start at WINDOW-aligned
    /// offsets (or range starts). A raw image is read only where mapped; a
    /// compressed one is decompressed whole. Stops early (Ok) when the
    /// receiver hangs up.
    pub fn produce(
        &self,
        ranges: &[Range],
        out: mpsc::SyncSender<Window>,
        pool: mpsc::Receiver<Vec<u8>>,
    ) -> Result<()> {
        let Some(end) = ranges.last().map(|r| r.end) else {
            return Ok(());
        };
        if self.kind == Kind::Raw {
            let f = File::open(&self.path)
                .with_context(|| format!("opening {}", self.path.display()))?;
            for r in ranges {
                let sent = send_windows(r.start, r.end, &out, &pool, |buf, pos| {
                    f.read_exact_at(buf, pos)
                        .with_context(|| format!("reading {} at {pos}", self.path.display()))
                })?;
                if !sent {
                    return Ok(());
                }
            }
            return Ok(());
        }
        if let Some(frames) = &self.frames {
            return self.produce_frames(frames, ranges, end, out, pool);
        }
        let mut r = self.stream()?;
        let mut pos = 0u64;
        while pos < end {
            let Ok(mut buf) = pool.recv() else {
                return Ok(());
            };
            let want = (end - pos).min(WINDOW as u64) as usize;
            let n = crate::fs::read_full(&mut r, &mut buf[..want])
                .with_context(|| format!("decompressing {}", self.path.display()))?;
            if n < want {
                anyhow::bail!(
                    "{} ends at byte {}, its block map goes to {end}: truncated image",
                    self.path.display(),
                    pos + n as u64
                );
            }
            if out
                .send(Window {
                    offset: pos,
                    buf,
                    len: n,
                })
                .is_err()
            {
                return Ok(());
            }
            pos += n as u64;
        }
        Ok(())
    }

    /// `produce` for a seekable `.zst`: only the frames that hold mapped
    /// bytes are read, decompressed on up to four threads (frame j on
    /// thread j mod n) and handed on in image order.
    fn produce_frames(
        &self,
        frames: &[Frame],
        ranges: &[Range],
        end: u64,
        out: mpsc::SyncSender<Window>,
        pool: mpsc::Receiver<Vec<u8>>,
    ) -> Result<()> {
        let covered = frames.last().map_or(0, |f| f.image_offset + f.len);
        if covered < end {
            anyhow::bail!(
                "{} ends at byte {covered}, its block map goes to {end}: truncated image",
                self.path.display()
            );
        }
        let need: Vec<&Frame> = frames
            .iter()
            .filter(|f| {
                let fe = f.image_offset + f.len;
                ranges
                    .iter()
                    .any(|r| r.start < fe && f.image_offset < r.end)
            })
            .collect();
        let file =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        let threads = super::par::threads(need.len());
        tracing::info!(
            "decompressing {} of {} frames (the rest hold no mapped block) on {threads} threads",
            need.len(),
            frames.len()
        );
        let (need, file, path) = (&need, &file, &self.path);
        std::thread::scope(|s| -> Result<()> {
            let mut rxs = Vec::new();
            let mut backs = Vec::new();
            let mut workers = Vec::new();
            for t in 0..threads {
                let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(1);
                // Frame buffers come back to be reused: no fresh 8 MiB
                // (page faults, zeroing) per frame.
                let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
                rxs.push(rx);
                backs.push(back_tx);
                workers.push(s.spawn(move || -> Result<()> {
                    let mut d = zstd::bulk::Decompressor::new().context("starting zstd")?;
                    let mut z = Vec::new();
                    for f in need.iter().skip(t).step_by(threads) {
                        z.resize(usize::try_from(f.compressed)?, 0);
                        file.read_exact_at(&mut z, f.file_offset)
                            .with_context(|| format!("reading {}", path.display()))?;
                        let mut data = back_rx.try_recv().unwrap_or_default();
                        data.clear();
                        data.reserve(usize::try_from(f.len)?);
                        d.decompress_to_buffer(&z, &mut data).with_context(|| {
                            format!(
                                "decompressing {} (the frame at byte {})",
                                path.display(),
                                f.file_offset
                            )
                        })?;
                        if data.len() as u64 != f.len {
                            anyhow::bail!(
                                "{}: the frame at byte {} holds {} bytes, its seek table says {}",
                                path.display(),
                                f.file_offset,
                                data.len(),
                                f.len
                            );
                        }
                        if tx.send(data).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(())
                }));
            }
            for (j, f) in need.iter().enumerate() {
                let Ok(data) = rxs[j % threads].recv() else {
                    break;
                };
                let stop = (f.image_offset + f.len).min(end);
                let sent = send_windows(f.image_offset, stop, &out, &pool, |buf, pos| {
                    let at = (pos - f.image_offset) as usize;
                    buf.copy_from_slice(&data[at..at + buf.len()]);
                    Ok(())
                })?;
                if !sent {
                    break;
                }
                let _ = backs[j % threads].send(data);
            }
            drop(rxs);
            super::par::first_error(workers, "a zstd thread")
        })
    }

    /// Hashes a raw image's mapped ranges and compares each with the
    /// bmap, before anything is written. `tick` gets the bytes done.
    pub fn check_ranges(&self, ranges: &[Range], tick: &(dyn Fn(u64) + Sync)) -> Result<()> {
        let f =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        super::par::each_range(ranges, |i| {
            let r = &ranges[i];
            let Some(want) = r.sha256 else { return Ok(()) };
            let mut buf = vec![0u8; WINDOW];
            let mut h = Sha256::new();
            let mut pos = r.start;
            while pos < r.end {
                let len = (r.end - pos).min(WINDOW as u64) as usize;
                f.read_exact_at(&mut buf[..len], pos)
                    .with_context(|| format!("reading {} at {pos}", self.path.display()))?;
                h.update(&buf[..len]);
                pos += len as u64;
                tick(len as u64);
            }
            if h.finalize()[..] != want[..] {
                return Err(input(
                    &self.path,
                    format!(
                        "bytes {}..{} do not match the sha256 in the bmap: the image is corrupted or the bmap is not its own",
                        r.start, r.end
                    ),
                    "rebuild or download the image again; nothing was written",
                )
                .into());
            }
            Ok(())
        })
    }
}

/// Hands image bytes `start..stop` to `out` as windows cut at multiples
/// of [`WINDOW`], buffers from `pool`, `fill(buf, offset)` writing each.
/// False when the other side hung up (the write ended early).
fn send_windows(
    start: u64,
    stop: u64,
    out: &mpsc::SyncSender<Window>,
    pool: &mpsc::Receiver<Vec<u8>>,
    mut fill: impl FnMut(&mut [u8], u64) -> Result<()>,
) -> Result<bool> {
    let mut pos = start;
    while pos < stop {
        let next = ((pos / WINDOW as u64) + 1) * WINDOW as u64;
        let len = (next.min(stop) - pos) as usize;
        let Ok(mut buf) = pool.recv() else {
            return Ok(false);
        };
        fill(&mut buf[..len], pos)?;
        if out
            .send(Window {
                offset: pos,
                buf,
                len,
            })
            .is_err()
        {
            return Ok(false);
        }
        pos += len as u64;
    }
    Ok(true)
}

/// Image bytes `offset..offset+len` in `buf[..len]`.
pub struct Window {
    pub offset: u64,
    pub buf: Vec<u8>,
    pub len: usize,
}

/// Expected sha256 of files beside an image, from `SHA256SUMS` and
/// `manifest.json` ("file name" -> (hex, which file said so)).
pub fn published_sums(dir: &Path) -> Result<BTreeMap<String, Vec<(String, String)>>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let sums = dir.join("SHA256SUMS");
    if let Ok(text) = std::fs::read_to_string(&sums) {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed = line.split_once(' ').and_then(|(h, n)| {
                let n = n.strip_prefix(' ').or_else(|| n.strip_prefix('*'))?;
                (h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
                    .then(|| (h.to_ascii_lowercase(), n.to_string()))
            });
            let (h, n) = parsed.ok_or_else(|| {
                InputError::new(
                    sums.display().to_string(),
                    format!("line {}", i + 1),
                    "is not `SHA256  FILE`",
                    "restore the SHA256SUMS written with the image",
                )
            })?;
            out.entry(n).or_default().push((h, "SHA256SUMS".into()));
        }
    }
    let manifest = dir.join("manifest.json");
    if let Ok(bytes) = std::fs::read(&manifest) {
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            InputError::new(
                manifest.display().to_string(),
                "(file)",
                format!("is not JSON: {e}"),
                "restore the manifest.json written with the image",
            )
        })?;
        if let Some(arts) = v["artifacts"].as_object() {
            for a in arts.values() {
                if let (Some(f), Some(h)) = (a["file"].as_str(), a["sha256"].as_str()) {
                    out.entry(f.to_string())
                        .or_default()
                        .push((h.to_ascii_lowercase(), "manifest.json".into()));
                }
            }
        }
    }
    Ok(out)
}

/// Compares `path` with every sum published for its name. Returns whether
/// any sum was found; a mismatch is an input error (exit 2).
pub fn check_published(
    sums: &BTreeMap<String, Vec<(String, String)>>,
    path: &Path,
) -> Result<bool> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(false);
    };
    let Some(want) = sums.get(&name) else {
        return Ok(false);
    };
    let got = crate::io::sha256_file(path)?;
    for (h, from) in want {
        if *h != got {
            return Err(InputError::new(
                path.display().to_string(),
                "sha256",
                format!("is {got}, but {from} beside it says {h}: the file is corrupted or not the one built"),
                "rebuild or download it again; nothing was written",
            )
            .into());
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xz_size_reads_the_index_of_every_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = vec![1u8; 300_000];
        let b = vec![2u8; 70_001];
        let mut bytes = Vec::new();
        for part in [&a, &b] {
            let mut e = liblzma::read::XzEncoder::new(&part[..], 1);
            e.read_to_end(&mut bytes).expect("xz");
        }
        bytes.extend_from_slice(&[0; 8]);
        let p = dir.path().join("x.img.xz");
        std::fs::write(&p, &bytes).expect("write");
        let mut f = File::open(&p).expect("open");
        assert_eq!(xz_size(&mut f), Some(370_001));
        assert_eq!(detect(&p).expect("detect"), Kind::Xz);
        std::fs::write(&p, b"not xz at all").expect("write");
        let mut f = File::open(&p).expect("open");
        assert_eq!(xz_size(&mut f), None);
    }

    #[test]
    fn sums_files_are_read_and_mismatches_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.img.zst");
        std::fs::write(&f, b"abc").expect("write");
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        std::fs::write(dir.path().join("SHA256SUMS"), format!("{abc}  a.img.zst\n"))
            .expect("write");
        let s = published_sums(dir.path()).expect("sums");
        assert!(check_published(&s, &f).expect("ok"));
        assert!(!check_published(&s, &dir.path().join("other")).expect("unlisted"));
        std::fs::write(&f, b"abd").expect("write");
        let e = check_published(&s, &f).expect_err("mismatch");
        assert!(
            e.chain().any(|c| c.is::<crate::error::InputError>()),
            "{e:#}"
        );
        std::fs::write(dir.path().join("SHA256SUMS"), "nonsense\n").expect("write");
        assert!(published_sums(dir.path()).is_err());
    }

    #[test]
    fn bmap_is_found_beside_compressed_and_raw_images() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bm = dir.path().join("h.img.bmap");
        std::fs::write(&bm, "x").expect("write");
        assert_eq!(bmap_beside(&dir.path().join("h.img.zst")), Some(bm.clone()));
        assert_eq!(bmap_beside(&dir.path().join("h.img")), Some(bm));
        assert_eq!(bmap_beside(&dir.path().join("g.img")), None);
    }
}
