// SPDX-License-Identifier: Apache-2.0
//! hc-image: builds verified, reproducible disk images for homecloud boards.
//!
//! Pipeline: inputs (board, profile, homecloud.toml, base) -> `plan` (pure
//! layout) -> root tar stream -> filesystems written into the image ->
//! verification -> partition table and blobs -> artifacts.

pub mod error;
pub mod plan;
pub mod size;
pub mod spec;
