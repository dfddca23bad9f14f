// SPDX-License-Identifier: Apache-2.0
//! hc-firstboot: the first-boot agent (device) and the `homecloud.toml`
//! model it shares with the image builder (build host).
//!
//! Leaves first: `exec` (the command seam), `rados`, `host` (files, LAN,
//! node), `config`, `secret`; then `engine` (steps, state, journal,
//! failpoints); then one folder per feature. main.rs lists the steps, the
//! daemon duties and the join answers.

pub mod ceph;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod exec;
pub mod host;
pub mod identity;
pub mod keepalived;
pub mod rados;
pub mod registry;
pub mod secret;
pub mod settings;
pub mod timesync;
pub mod tls;
