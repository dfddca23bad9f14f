// SPDX-License-Identifier: Apache-2.0
//! The read-back: the device's cache dropped, then every written range
//! read from the medium and compared with the bmap's sha256 (or, without
//! one, with the hash of what was written).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::bmap::Range;
use super::source::WINDOW;

/// The first range whose bytes on `dev` differ from `want`, as an error.
/// `tick` gets the bytes read; `stop` is polled between windows.
pub fn read_back(
    dev: &File,
    ranges: &[Range],
    want: &[[u8; 32]],
    tick: &dyn Fn(u64),
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    super::sys::drop_caches(dev).context("dropping the device's cache before the read-back")?;
    // Reading and hashing overlap: a reader thread feeds this one.
    let (tx, rx) = mpsc::sync_channel::<(usize, Vec<u8>, usize)>(2);
    let (pool_tx, pool_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..3 {
        pool_tx
            .send(vec![0u8; WINDOW])
            .context("filling the buffer pool")?;
    }
    std::thread::scope(|s| -> Result<()> {
        let reader = s.spawn(move || -> Result<()> {
            for (i, r) in ranges.iter().enumerate() {
                let mut pos = r.start;
                while pos < r.end {
                    let len = (r.end - pos).min(WINDOW as u64) as usize;
                    let Ok(mut buf) = pool_rx.recv() else {
                        return Ok(());
                    };
                    dev.read_exact_at(&mut buf[..len], pos)
                        .with_context(|| format!("reading the device back at offset {pos}"))?;
                    if tx.send((i, buf, len)).is_err() {
                        return Ok(());
                    }
                    pos += len as u64;
                }
            }
            Ok(())
        });
        let mut cur: Option<(usize, Sha256, u64)> = None;
        let mut result = Ok(());
        for (i, buf, len) in rx.iter() {
            if stop() {
                result = Err(anyhow::anyhow!("interrupted during the read-back"));
                break;
            }
            let (_, h, left) = cur.get_or_insert_with(|| (i, Sha256::new(), ranges[i].len()));
            h.update(&buf[..len]);
            *left -= len as u64;
            tick(len as u64);
            let _ = pool_tx.send(buf);
            if *left == 0 {
                if let Some((i, h, _)) = cur.take() {
                    let got: [u8; 32] = h.finalize().into();
                    if got != want[i] {
                        let r = &ranges[i];
                        result = Err(anyhow::anyhow!(
                            "verify failed: device bytes {}..{} differ from the image (sha256 {} read, {} expected); the card or reader is faulty, or something else wrote to it: try another card",
                            r.start,
                            r.end,
                            hex::encode(got),
                            hex::encode(want[i])
                        ));
                        break;
                    }
                }
            }
        }
        drop(rx);
        drop(pool_tx);
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("read-back thread panicked"))?;
        result?;
        read?;
        if cur.is_some() {
            bail!("read-back stopped inside a range");
        }
        Ok(())
    })
}
