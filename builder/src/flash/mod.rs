// SPDX-License-Identifier: Apache-2.0
//! `hc-image flash IMAGE DEVICE`: write a card fast and prove it, never the
//! wrong disk.
//!
//! Order of events (after coreos-installer and bmaptool):
//! 1. `--config` validated, the image's block map read, the device's facts
//!    gathered and every safety rule applied ([`device::refusals`]);
//! 2. the image checked against `SHA256SUMS`/`manifest.json` beside it (a
//!    raw image range by range against its bmap) -- all before any write;
//! 3. confirmation (terminal) or `--yes`;
//! 4. the first MiB zeroed, every other mapped range written (decompressed
//!    on one thread, written on this one), sync, the first MiB written,
//!    sync ([`write`]);
//! 5. the cache dropped and every range read back and hashed ([`verify`]);
//! 6. `--config`: homecloud.toml replaced on HCBOOT ([`hcboot`]).
//!
//! SIGINT/SIGTERM during 4 stop the write with the first MiB still zero:
//! the card is incomplete and cannot boot.
//!
//! Test seams (environment, for tests/flash.rs only):
//! `HC_FLASH_TEST_CORRUPT_BEFORE_VERIFY=OFFSET` flips the device byte at
//! OFFSET after the write and before the read-back;
//! `HC_FLASH_TEST_WINDOW_DELAY_MS=N` sleeps N ms per written window so a
//! signal can arrive mid-write.

pub mod bmap;
pub mod cli;
pub mod device;
pub mod fat;
pub mod hcboot;
mod par;
pub mod progress;
pub mod source;
pub mod sys;
pub mod verify;
pub mod write;

use std::fs::OpenOptions;
use std::io::{BufRead, IsTerminal, Write as _};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::error::InputError;
use source::{Kind, Source};

pub use source::WINDOW;
pub use write::HEAD;

/// What `hc-image flash` was asked to do.
#[derive(Debug, Clone)]
pub struct FlashOpts {
    pub image: PathBuf,
    pub device: PathBuf,
    /// Block map (default: the one beside the image).
    pub bmap: Option<PathBuf>,
    pub yes: bool,
    pub force: bool,
    pub no_verify: bool,
    pub config: Option<PathBuf>,
    pub quiet: bool,
}

/// What happened, with timings (for the benchmark).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub image_size: u64,
    pub written: u64,
    pub ranges: usize,
    pub check_secs: f64,
    pub write_secs: f64,
    pub verify_secs: Option<f64>,
}

/// `hc-image flash --list`.
pub fn list() -> Result<()> {
    let c = device::Host::real().candidates();
    if c.is_empty() {
        eprintln!("no removable disks found (insert a card; loop devices are not listed)");
    }
    println!("{:<14} {:>10}  {:<8} MODEL", "DEVICE", "SIZE", "TRANSPORT");
    for d in c {
        let busy = if d.mounted.is_empty() {
            ""
        } else {
            " (mounted)"
        };
        println!(
            "{:<14} {:>10}  {:<8} {}{busy}",
            d.path.display(),
            crate::size::human(d.size),
            d.transport,
            d.model
        );
    }
    Ok(())
}

fn incomplete(dev: &Path) -> String {
    format!(
        "{} is incomplete: its first MiB is zeroed, so it will not boot; flash it again",
        dev.display()
    )
}

/// Asks on the terminal, or requires `--yes`.
fn confirm(o: &FlashOpts, dev: &device::Device) -> Result<()> {
    if o.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(InputError::new(
            o.device.display().to_string(),
            "confirmation",
            "stdin is not a terminal, so nobody can confirm overwriting the device",
            "pass --yes to write without asking",
        )
        .into());
    }
    eprint!(
        "Write {} to {} ({})? Everything on it will be lost. Type yes: ",
        o.image.display(),
        dev.path.display(),
        dev.model
    );
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the confirmation")?;
    if line.trim() != "yes" {
        return Err(InputError::new(
            o.device.display().to_string(),
            "confirmation",
            "not confirmed; nothing was written",
            "type yes to write, or pass --yes",
        )
        .into());
    }
    Ok(())
}

fn test_seam(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Checks the image before anything is written: its bmap and the file
/// itself against the sums published beside it; a raw image range by
/// range against its bmap. True when the bytes to write are known good
/// before writing: a raw image whose ranges matched, or a compressed one
/// whose file and bmap matched their published sums (decompression then
/// yields the bytes the bmap was made from). Otherwise each range is
/// hashed while it is written and the first MiB goes last only if all match.
fn check_image(src: &Source, ranges: &[bmap::Range], prog: &progress::Progress) -> Result<bool> {
    let dir = src
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let sums = source::published_sums(&dir)?;
    let bmap_published = match &src.bmap {
        Some((p, _)) => source::check_published(&sums, p)?,
        None => false,
    };
    if src.kind == Kind::Raw && src.bmap.is_some() {
        prog.phase("checking", ranges.iter().map(bmap::Range::len).sum());
        src.check_ranges(ranges, &|n| prog.inc(n))?;
        return Ok(true);
    }
    prog.message("checking");
    let published = source::check_published(&sums, &src.path)?;
    if !published {
        tracing::warn!(
            "no SHA256SUMS or manifest.json beside {} lists it: the image cannot be checked before writing{}",
            src.path.display(),
            if src.bmap.is_some() {
                " (the bmap's range hashes are checked while writing; the first MiB is written only if all match)"
            } else {
                ""
            }
        );
    }
    Ok(published && bmap_published)
}

/// Runs `hc-image flash`.
pub fn flash(o: &FlashOpts) -> Result<Report> {
    let t0 = Instant::now();
    if let Some(c) = &o.config {
        hc_firstboot::config::HomecloudConfig::load(c)?;
    }
    let src = Source::open(&o.image, o.bmap.as_deref())?;
    let host = device::Host::real();
    let dev = host.open_device(&o.device)?;
    let refused = device::refusals(&dev, src.size, o.force);
    if !refused.is_empty() {
        return Err(device::refusal_error(&o.device, &refused).into());
    }
    if src.bmap.is_none() {
        tracing::warn!(
            "no .bmap beside {}: writing {}",
            src.path.display(),
            if src.kind == Kind::Raw {
                "the sparse image's data extents"
            } else {
                "every byte of the image (slow)"
            }
        );
    }
    let image_size = src.size.unwrap_or(0);
    let ranges = {
        let head = src.read_prefix(fat::TABLE_BYTES.min(image_size))?;
        let need = fat::starts(&head)
            .iter()
            .map(|s| s + 512)
            .max()
            .unwrap_or(0);
        let prefix = src.read_prefix(need.min(image_size))?;
        fat::add_regions(&src.ranges()?, &fat::metadata(&prefix), 4096, image_size)
    };
    let prog = progress::Progress::new(o.quiet);
    let prechecked = check_image(&src, &ranges, &prog)?;
    prog.done();
    let check_secs = t0.elapsed().as_secs_f64();

    if !o.quiet {
        eprintln!("{}", device::describe(&dev));
    }
    confirm(o, &dev)?;

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(&o.device)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                anyhow::Error::from(InputError::new(
                    o.device.display().to_string(),
                    "device",
                    "is busy: something has it open exclusively (a mount, RAID or device mapper)",
                    "stop what uses it and run again",
                ))
            } else {
                anyhow::Error::new(e).context(format!("opening {} for writing", o.device.display()))
            }
        })?;
    sys::catch_stop_signals().context("installing the SIGINT/SIGTERM handler")?;

    let mapped: u64 = ranges.iter().map(bmap::Range::len).sum();
    tracing::info!(
        "writing {} of {} in {} ranges to {}",
        crate::size::human(mapped),
        crate::size::human(image_size),
        ranges.len(),
        o.device.display()
    );
    let t1 = Instant::now();
    prog.phase("writing", mapped);
    let direct = write::Direct::open(&o.device, &file);
    let written = write_all(
        &src,
        &direct,
        &ranges,
        image_size,
        dev.size,
        !prechecked,
        &prog,
    )
    .with_context(|| incomplete(&o.device))?;
    let write_secs = t1.elapsed().as_secs_f64();
    prog.done();

    if let Some(off) = test_seam("HC_FLASH_TEST_CORRUPT_BEFORE_VERIFY") {
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, off)
            .context("test seam: reading")?;
        b[0] ^= 0xff;
        file.write_all_at(&b, off).context("test seam: writing")?;
        file.sync_all().context("test seam: syncing")?;
    }

    let mut verify_secs = None;
    if o.no_verify {
        tracing::info!("not verified (--no-verify)");
    } else {
        let t2 = Instant::now();
        let want: Vec<[u8; 32]> = ranges
            .iter()
            .zip(&written)
            .map(|(r, w)| r.sha256.or(*w))
            .collect::<Option<_>>()
            .context("internal error: a range has no hash to verify against")?;
        prog.phase("verifying", mapped);
        verify::read_back(
            &file,
            direct.direct(),
            &ranges,
            &want,
            &|n| prog.inc(n),
            &|| sys::stop_requested().is_some(),
        )?;
        prog.done();
        verify_secs = Some(t2.elapsed().as_secs_f64());
        tracing::info!("verified: every written range read back equal to the image");
    }
    if let Err(e) = sys::reread_partitions(&file) {
        tracing::debug!("re-reading the partition table: {e}");
    }
    drop(file);
    if let Some(c) = &o.config {
        hcboot::replace_config(&o.device, c)?;
        tracing::info!("replaced homecloud.toml on HCBOOT with {}", c.display());
    }
    Ok(Report {
        image_size,
        written: mapped,
        ranges: ranges.len(),
        check_secs,
        write_secs,
        verify_secs,
    })
}

/// Step 4: producer thread (read or decompress), writer here.
fn write_all(
    src: &Source,
    dev: &impl write::Sink,
    ranges: &[bmap::Range],
    image_size: u64,
    device_size: u64,
    hash: bool,
    prog: &progress::Progress,
) -> Result<Vec<Option<[u8; 32]>>> {
    let delay = test_seam("HC_FLASH_TEST_WINDOW_DELAY_MS").map(std::time::Duration::from_millis);
    let mut w = write::Writer::start(dev, ranges, image_size, device_size, hash)?;
    let (tx, rx) = mpsc::sync_channel::<source::Window>(2);
    let (pool_tx, pool_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..4 {
        pool_tx
            .send(vec![0u8; WINDOW])
            .context("filling the buffer pool")?;
    }
    std::thread::scope(|s| -> Result<()> {
        let producer = s.spawn(move || src.produce(ranges, tx, pool_rx));
        let mut result = Ok(());
        for win in rx.iter() {
            if let Some(sig) = sys::stop_requested() {
                result = Err(anyhow::anyhow!("stopped by signal {sig}"));
                break;
            }
            let before = w.bytes;
            if let Err(e) = w.window(&win) {
                result = Err(e);
                break;
            }
            prog.inc(w.bytes - before);
            let _ = pool_tx.send(win.buf);
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
        }
        drop(rx);
        drop(pool_tx);
        let produced = producer
            .join()
            .map_err(|_| anyhow::anyhow!("image reader thread panicked"))?;
        if result.is_err() {
            // Whatever was written stays; the first MiB is still zero.
            let _ = dev.sync();
        }
        result?;
        produced
    })?;
    if let Some(sig) = sys::stop_requested() {
        let _ = dev.sync();
        anyhow::bail!("stopped by signal {sig}");
    }
    prog.message("syncing");
    w.finish()
}
