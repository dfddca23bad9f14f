// SPDX-License-Identifier: Apache-2.0
//! Developer tools behind hidden or measuring commands (build host): not
//! part of building an image.

pub mod bench;
pub mod flash_bench;
pub mod images_bench;
