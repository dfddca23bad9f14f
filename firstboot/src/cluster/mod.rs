// SPDX-License-Identifier: Apache-2.0
//! Zero-touch cluster (device): the `network` and `cluster` steps, and
//! `hc-firstboot serve`, the long-running daemon that announces this node,
//! listens to its peers, answers joins over the Noise channel and runs the
//! features' duties. The daemon and the agent share what they know through
//! small files in /run/hc-firstboot (peers heard, this node's phase), so
//! either can restart.

pub mod admit;
pub mod channel;
pub mod daemon;
pub mod discovery;
pub mod duty;
pub mod form;
pub mod join;
pub mod managers;
pub mod network;
pub mod peers;
pub mod swarm;
