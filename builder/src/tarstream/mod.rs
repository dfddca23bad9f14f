// SPDX-License-Identifier: Apache-2.0
//! Root filesystem tar streams (build host).
//!
//! The base tarball is passed through record by record, byte for byte, so
//! every owner, mode, device number, hard link, long name, sparse map and
//! xattr reaches `mke2fs -d -` exactly as the base had it. Entries that an
//! overlay replaces are dropped; overlay entries are appended after the base.

mod merge;
mod read;
mod scan;
#[cfg(test)]
mod tests;

pub use merge::{merge, Extra, ExtraKind, MergeReport};
pub use read::{is_compressed, normalize, open_tar, Member, Scanner};
pub use scan::{is_boot_file, scan, scan_file, TreeStats};
