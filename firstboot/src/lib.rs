// SPDX-License-Identifier: Apache-2.0
//! hc-firstboot: the first-boot agent (device) and the `homecloud.toml`
//! model it shares with the image builder (build host).

pub mod agent;
pub mod ceph;
pub mod channel;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod grow;
pub mod identity;
pub mod keepalived;
pub mod rados;
pub mod secret;
pub mod state;
pub mod swarm;
pub mod timesync;
