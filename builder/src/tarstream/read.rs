// SPDX-License-Identifier: Apache-2.0
//! Reading tar streams record by record, as raw bytes: compressed or not,
//! with PAX and GNU long-name records kept with their member.

use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::error::InputError;

/// The tar block size.
pub const BLOCK: usize = 512;

/// True when the file starts with a zstd or xz magic.
pub fn is_compressed(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 6];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f
        .read(&mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(n >= 4 && magic[..4] == [0x28, 0xb5, 0x2f, 0xfd]
        || n >= 6 && magic == [0xfd, b'7', b'z', b'X', b'Z', 0])
}

/// Opens a tarball, decompressing zstd and xz (recognized by magic).
pub fn open_tar(path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut f = std::fs::File::open(path).map_err(|e| {
        InputError::new(
            path.display().to_string(),
            "(file)",
            format!("cannot open it: {e}"),
            "check the path given with --rootfs",
        )
    })?;
    let mut magic = [0u8; 6];
    let n = f
        .read(&mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    drop(f);
    let f = BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    Ok(if n >= 4 && magic[..4] == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::new(f).context("starting zstd decoder")?)
    } else if n >= 6 && magic == [0xfd, b'7', b'z', b'X', b'Z', 0] {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(f))
    } else {
        Box::new(f)
    })
}

/// One archive member with the records that describe it (PAX, GNU long names).
#[derive(Debug, Clone)]
pub struct Member {
    /// Normalized path: no leading `./` or `/`, no trailing `/`; "" is the root.
    pub path: String,
    pub typeflag: u8,
    /// Bytes of data following the headers (before padding).
    pub data_len: u64,
    /// Raw header records, passed through verbatim.
    pub headers: Vec<u8>,
    /// Offset of the main ustar header inside `headers`.
    pub main_at: usize,
    pub link: Option<String>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

pub fn normalize(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    let p = p.trim_end_matches('/');
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 for large values.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn checksum_ok(h: &[u8]) -> bool {
    let stored = octal(&h[148..156]);
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    stored == Some(sum)
}

fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .context("bad PAX record")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .context("bad PAX record length")?;
        if len <= sp + 1 || len > rest.len() {
            bail!("bad PAX record length");
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .context("bad PAX record")?;
        out.push((
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            rec[eq + 1..].to_vec(),
        ));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Streaming reader of raw tar members.
pub struct Scanner<R> {
    r: R,
    pending_data: u64,
    pub bytes_read: u64,
    done: bool,
}

impl<R: Read> Scanner<R> {
    pub fn new(r: R) -> Self {
        Scanner {
            r,
            pending_data: 0,
            bytes_read: 0,
            done: false,
        }
    }

    fn read_block(&mut self, buf: &mut [u8; BLOCK]) -> Result<bool> {
        let mut got = 0;
        while got < BLOCK {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading the tar stream"),
            }
        }
        self.bytes_read += got as u64;
        match got {
            0 => Ok(false),
            BLOCK => Ok(true),
            _ => bail!("the tar stream ends in the middle of a record (truncated)"),
        }
    }

    fn read_data(&mut self, len: u64) -> Result<Vec<u8>> {
        if len > 64 << 20 {
            bail!("a tar metadata record claims {len} bytes");
        }
        let padded = (len as usize).div_ceil(BLOCK) * BLOCK;
        let mut v = vec![0u8; padded];
        self.r
            .read_exact(&mut v)
            .context("the tar stream is truncated inside a metadata record")?;
        self.bytes_read += padded as u64;
        v.truncate(len as usize);
        Ok(v)
    }

    /// Next member; its data must be consumed with `copy_data` or `skip_data`.
    pub fn next_member(&mut self) -> Result<Option<Member>> {
        if self.pending_data > 0 {
            self.skip_data()?;
        }
        if self.done {
            return Ok(None);
        }
        let mut headers = Vec::new();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut long_name: Option<String> = None;
        let mut long_link: Option<String> = None;
        let mut blk = [0u8; BLOCK];
        loop {
            if !self.read_block(&mut blk)? {
                if headers.is_empty() {
                    // EOF without the end marker: GNU tar accepts this, so do we.
                    self.done = true;
                    return Ok(None);
                }
                bail!("the tar stream is truncated after a header");
            }
            if blk.iter().all(|&b| b == 0) {
                if headers.is_empty() {
                    self.done = true;
                    return Ok(None);
                }
                bail!("a tar header is followed by an end-of-archive block");
            }
            if !checksum_ok(&blk) {
                bail!(
                    "not a tar archive: bad header checksum at byte {}",
                    self.bytes_read - BLOCK as u64
                );
            }
            let typeflag = blk[156];
            let size = octal(&blk[124..136]).context("bad size field in a tar header")?;
            match typeflag {
                b'x' | b'L' | b'K' => {
                    headers.extend_from_slice(&blk);
                    let data = self.read_data(size)?;
                    let padded = (data.len()).div_ceil(BLOCK) * BLOCK;
                    let mut raw = data.clone();
                    raw.resize(padded, 0);
                    headers.extend_from_slice(&raw);
                    match typeflag {
                        b'x' => pax.extend(parse_pax(&data)?),
                        b'L' => long_name = Some(cstr(&data)),
                        _ => long_link = Some(cstr(&data)),
                    }
                }
                b'g' => {
                    // Global PAX headers apply to what follows: keep them in place.
                    headers.extend_from_slice(&blk);
                    let data = self.read_data(size)?;
                    let mut raw = data.clone();
                    raw.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
                    headers.extend_from_slice(&raw);
                }
                _ => {
                    let main_at = headers.len();
                    headers.extend_from_slice(&blk);
                    // Old GNU sparse: extension headers follow the main one.
                    if typeflag == b'S' && blk[482] != 0 {
                        let mut ext = [0u8; BLOCK];
                        loop {
                            if !self.read_block(&mut ext)? {
                                bail!("the tar stream is truncated in a sparse map");
                            }
                            headers.extend_from_slice(&ext);
                            if ext[504] == 0 {
                                break;
                            }
                        }
                    }
                    let ustar = &blk[257..263] == b"ustar\0";
                    let mut path = cstr(&blk[0..100]);
                    if ustar && blk[345] != 0 {
                        path = format!("{}/{}", cstr(&blk[345..500]), path);
                    }
                    let mut data_len = size;
                    let mut link = Some(cstr(&blk[157..257])).filter(|s| !s.is_empty());
                    let mut xattrs = Vec::new();
                    let mut uid = octal(&blk[108..116]).unwrap_or(0);
                    let mut gid = octal(&blk[116..124]).unwrap_or(0);
                    if let Some(n) = long_name {
                        path = n;
                    }
                    if let Some(l) = long_link {
                        link = Some(l);
                    }
                    for (k, v) in pax {
                        let s = || String::from_utf8_lossy(&v).into_owned();
                        match k.as_str() {
                            "path" => path = s(),
                            "linkpath" => link = Some(s()),
                            "size" => data_len = s().parse().context("bad PAX size")?,
                            "uid" => uid = s().parse().context("bad PAX uid")?,
                            "gid" => gid = s().parse().context("bad PAX gid")?,
                            _ => {
                                if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                                    xattrs.push((name.to_string(), v));
                                }
                            }
                        }
                    }
                    let mode = octal(&blk[100..108]).unwrap_or(0) as u32 & 0o7777;
                    self.pending_data = data_len.div_ceil(BLOCK as u64) * BLOCK as u64;
                    return Ok(Some(Member {
                        path: normalize(&path),
                        typeflag,
                        data_len,
                        headers,
                        main_at,
                        link: link.map(|l| if typeflag == b'1' { normalize(&l) } else { l }),
                        xattrs,
                        mode,
                        uid,
                        gid,
                    }));
                }
            }
        }
    }

    /// Copies the current member's data (with padding) to `w`.
    pub fn copy_data(&mut self, w: &mut dyn Write) -> Result<()> {
        let n =
            io::copy(&mut (&mut self.r).take(self.pending_data), w).context("copying tar data")?;
        self.bytes_read += n;
        if n != self.pending_data {
            bail!("the tar stream is truncated inside a file's data");
        }
        self.pending_data = 0;
        Ok(())
    }

    pub fn skip_data(&mut self) -> Result<()> {
        self.copy_data(&mut io::sink())
    }
}

impl<R: Read + Seek> Scanner<R> {
    /// Skips the current member's data by seeking; `len` is the file size,
    /// since seeking past the end would hide a truncated archive.
    pub fn seek_skip(&mut self, len: u64) -> Result<()> {
        let pos = self
            .r
            .seek(SeekFrom::Current(self.pending_data as i64))
            .context("seeking in the tar file")?;
        if pos > len {
            bail!("the tar stream is truncated inside a file's data");
        }
        self.bytes_read += self.pending_data;
        self.pending_data = 0;
        Ok(())
    }
}
