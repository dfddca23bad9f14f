// SPDX-License-Identifier: Apache-2.0
//! The read-back: the device's cache dropped, then every written range
//! read from the medium and compared with the bmap's sha256 (or, without
//! one, with the hash of what was written).

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::bmap::Range;
use super::source::WINDOW;
use super::write::{Aligned, ALIGN};

/// A range whose bytes on `dev` differ from `want`, as an error. Ranges
/// are read and hashed on every core (`par`). `tick` gets the bytes read;
/// `stop` is polled between windows.
pub fn read_back(
    dev: &File,
    direct: Option<&File>,
    ranges: &[Range],
    want: &[[u8; 32]],
    tick: &(dyn Fn(u64) + Sync),
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<()> {
    super::sys::drop_caches(dev).context("dropping the device's cache before the read-back")?;
    super::par::each_range(ranges, |i| {
        let r = &ranges[i];
        // O_DIRECT reads (aligned buffer, offsets and lengths) skip the
        // page cache: one copy less, and nothing cached can answer.
        let mut mem = Aligned::new(WINDOW);
        let buf = mem.get();
        let aligned = r.start % ALIGN as u64 == 0 && r.end % ALIGN as u64 == 0;
        let src = match direct {
            Some(d) if aligned => d,
            _ => dev,
        };
        let mut h = Sha256::new();
        let mut pos = r.start;
        while pos < r.end {
            if stop() {
                bail!("interrupted during the read-back");
            }
            let len = (r.end - pos).min(WINDOW as u64) as usize;
            src.read_exact_at(&mut buf[..len], pos)
                .with_context(|| format!("reading the device back at offset {pos}"))?;
            h.update(&buf[..len]);
            tick(len as u64);
            pos += len as u64;
        }
        let got: [u8; 32] = h.finalize().into();
        if got != want[i] {
            bail!(
                "verify failed: device bytes {}..{} differ from the image (sha256 {} read, {} expected); the card or reader is faulty, or something else wrote to it: try another card",
                r.start,
                r.end,
                hex::encode(got),
                hex::encode(want[i])
            );
        }
        Ok(())
    })
}
