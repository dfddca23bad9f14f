// SPDX-License-Identifier: Apache-2.0
//! The system calls `flash` needs that std lacks: block-device cache
//! control and a signal flag. Like `crate::sys`, the only `unsafe` of this
//! module lives here.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// `_IO(0x12, 97)`: flush and invalidate a block device's buffer cache.
const BLKFLSBUF: libc::c_ulong = 0x1261;
/// `_IO(0x12, 95)`: re-read the partition table.
const BLKRRPART: libc::c_ulong = 0x125f;

fn ioctl0(f: &File, req: libc::c_ulong) -> io::Result<()> {
    // SAFETY: both requests take no argument; `f` is open for the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drops the device's cached pages so the next reads come from the medium:
/// BLKFLSBUF (block devices), then `posix_fadvise(DONTNEED)` (any file).
pub fn drop_caches(f: &File) -> io::Result<()> {
    let blk = ioctl0(f, BLKFLSBUF);
    // SAFETY: posix_fadvise takes no pointers; `f` is open for the call.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    match blk {
        // Not a block device (tests on files): fadvise was enough.
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => Ok(()),
        other => other,
    }
}

/// Asks the kernel to re-read the partition table (best effort: the
/// caller reports but does not fail on an error).
pub fn reread_partitions(f: &File) -> io::Result<()> {
    ioctl0(f, BLKRRPART)
}

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work: two atomic stores.
    SIGNAL.store(sig, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM set a flag ([`stop_requested`]) instead
/// of killing the process, so a write in progress can stop cleanly.
pub fn catch_stop_signals() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only touches
        // atomics; `sigaction` reads `sa` and writes nothing we keep.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal that asked us to stop, if any.
pub fn stop_requested() -> Option<i32> {
    STOP.load(Ordering::SeqCst)
        .then(|| SIGNAL.load(Ordering::SeqCst))
}
