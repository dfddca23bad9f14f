// SPDX-License-Identifier: Apache-2.0
//! The system call std lacks: sparse-file seeking (build host). The only
//! `unsafe` in the builder lives here.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

/// `lseek(2)`, for `SEEK_DATA` and `SEEK_HOLE`.
pub fn lseek(file: &File, pos: u64, whence: libc::c_int) -> io::Result<u64> {
    let off =
        libc::off_t::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek takes no pointers; `file` is borrowed, so the fd is open.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    u64::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// An exclusive advisory lock, held until the returned file is dropped:
/// parallel builds share one cache without building the same entry twice.
pub fn lock(path: &std::path::Path) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock takes no pointers; `f` is open for the call.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}
