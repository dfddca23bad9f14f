// SPDX-License-Identifier: Apache-2.0
//! Hashing ranges on every core: one sha256 cannot be split, but an
//! image's ranges can (the default image has two of about 100 MiB).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::ScopedJoinHandle;

use anyhow::Result;

use super::bmap::Range;

/// Threads for `items` pieces of work: one per core, at most 4, at most
/// one per item, at least one.
pub fn threads(items: usize) -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
        .min(items.max(1))
}

/// Runs `job(i)` for every range, the longest first, on up to as many
/// threads as cores (at most 4). After an error no new range starts; the
/// first error is returned.
pub fn each_range<F>(ranges: &[Range], job: F) -> Result<()>
where
    F: Fn(usize) -> Result<()> + Sync,
{
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(ranges[i].len()));
    let threads = threads(order.len());
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (order, job, next, failed) = (&order, &job, &next, &failed);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || -> Result<()> {
                    while !failed.load(Ordering::Relaxed) {
                        let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        if let Err(e) = job(i) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        first_error(workers, "a hashing thread")
    })
}

/// Joins every worker; the first error (or panic, as `what` panicked).
pub fn first_error(workers: Vec<ScopedJoinHandle<'_, Result<()>>>, what: &str) -> Result<()> {
    let mut first = Ok(());
    for w in workers {
        let r = w
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("{what} panicked")));
        if first.is_ok() {
            first = r;
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Range {
        Range::unhashed(start, end)
    }

    #[test]
    fn every_range_once_and_errors_surface() {
        let ranges: Vec<Range> = (0..9).map(|i| r(i * 10, i * 10 + i + 1)).collect();
        let seen = std::sync::Mutex::new(Vec::new());
        each_range(&ranges, |i| {
            seen.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push(i);
            Ok(())
        })
        .expect("no error");
        let mut s = seen.into_inner().expect("lock");
        s.sort();
        assert_eq!(s, (0..9).collect::<Vec<_>>());
        let e = each_range(&ranges, |i| {
            if i == 3 {
                anyhow::bail!("range 3 is bad")
            }
            Ok(())
        })
        .expect_err("an error");
        assert!(e.to_string().contains("range 3"), "{e}");
        each_range(&[], |_| Ok(())).expect("nothing to do");
    }
}
