// SPDX-License-Identifier: Apache-2.0
//! hc-image: builds verified, reproducible disk images for homecloud boards.
//!
//! Pipeline: inputs (board, profile, homecloud.toml, base) -> `plan` (pure
//! layout) -> root tar stream -> filesystems written into the image ->
//! verification -> partition table and blobs -> artifacts.

pub mod agent;
pub mod armbian;
pub mod artifacts;
pub mod base;
pub mod bench;
pub mod blobs;
pub mod build;
pub mod cli;
pub mod disk;
pub mod error;
pub mod exec;
pub mod fs;
pub mod inspect;
pub mod plan;
pub mod probe;
pub mod secret;
pub mod size;
pub mod spec;
pub mod stage;
pub mod sys;
pub mod tarstream;
