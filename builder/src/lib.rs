// SPDX-License-Identifier: Apache-2.0
//! hc-image: builds verified, reproducible disk images for homecloud boards.
//!
//! `pipeline` is `hc-image build`: inputs (board, profile, homecloud.toml,
//! base) -> root contents from the contributors -> `plan` (pure layout) ->
//! filesystems written into the image -> verification -> partition table and
//! blobs -> artifacts. docs/architecture.md describes it.

pub mod agent;
pub mod armbian;
pub mod artifacts;
pub mod base;
pub mod blobs;
pub mod cli;
pub mod dev;
pub mod disk;
pub mod error;
pub mod exec;
pub mod flash;
pub mod fs;
pub mod inspect;
pub mod io;
pub mod oci;
pub mod pipeline;
pub mod plan;
pub mod probe;
pub mod secret;
pub mod size;
pub mod spec;
pub mod sys;
pub mod tarstream;
