// SPDX-License-Identifier: Apache-2.0
//! Board files (`boards/<name>.toml`) and image profiles (`images/<name>.toml`).
//!
//! Build-host only. Boards are data: Rust knows a closed set of mechanisms
//! (partition table kinds, boot methods, blob placement) and the files pick
//! among them.

mod apt;
mod board;
mod dirs;
mod load;
mod profile;
#[cfg(test)]
mod tests;

pub use apt::*;
pub use board::*;
pub use dirs::*;
pub use load::SCHEMA;
pub use profile::*;
