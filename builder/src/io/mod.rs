// SPDX-License-Identifier: Apache-2.0
//! I/O helpers every part of the builder may use (build host): durable
//! writes through `*.partial` files, and sha256. A leaf: nothing here
//! imports the rest of the crate.

pub mod atomic;
pub mod date;
pub mod digest;

pub use atomic::{partial, sync_dir, write_atomic, write_synced};
pub use date::utc_rfc3339;
pub use digest::{sha256_file, sha256_hex};
