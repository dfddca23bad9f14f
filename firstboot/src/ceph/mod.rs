// SPDX-License-Identifier: Apache-2.0
//! Ceph (device): the agent's `ceph` step and the daemon's Ceph duties,
//! with Debian's native daemons (no cephadm: it needs a registry).
//!
//! The node that founded the swarm creates the cluster (fsid, keys, first
//! monitor, manager, MDS, pools, CephFS). Every other node gets the fsid,
//! keys and monitor addresses only over the join channel. Swarm managers run
//! the monitors and managers (one, then three: the swarm's own promotion
//! rule); an OSD goes on `storage.osd_device` of every storage node; CephFS
//! is mounted at /mnt/cephfs by a systemd mount unit.

pub mod cli;
pub mod cmd;
pub mod duty;
pub mod fs;
pub mod material;
pub mod mon;
pub mod osd;
pub mod step;
