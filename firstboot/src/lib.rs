// SPDX-License-Identifier: Apache-2.0
//! hc-firstboot: code shared by the image builder (build host) and the
//! first-boot agent (device). For now this is the `homecloud.toml` model; the
//! on-device steps arrive with the bootable-image work.

pub mod config;
