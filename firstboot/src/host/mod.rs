// SPDX-License-Identifier: Apache-2.0
//! Leaves any feature may use (device): durable files, the LAN interface,
//! the node's clock and name. They take plain arguments, never a feature's
//! types, so nothing here imports a feature or the engine.

pub mod files;
pub mod net;
pub mod node;
pub mod units;
