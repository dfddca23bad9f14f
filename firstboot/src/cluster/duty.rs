// SPDX-License-Identifier: Apache-2.0
//! Daemon duties: what `hc-firstboot serve` does periodically for each
//! feature. Features implement `Duty`; main.rs lists them.

use std::time::Duration;

use super::swarm::SwarmInfo;
use crate::engine::Ctx;
use crate::host::net::Lan;

/// The daemon's last look at this node (dockerd's `/info`, every 3 s).
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub lan: Lan,
    pub swarm: Option<SwarmInfo>,
}

impl ClusterView {
    /// In an active swarm.
    pub fn active(&self) -> bool {
        self.swarm.as_ref().is_some_and(|i| i.state == "active")
    }

    /// An active swarm manager.
    pub fn manager(&self) -> bool {
        self.active() && self.swarm.as_ref().is_some_and(|i| i.manager)
    }
}

/// When a duty runs.
pub enum Schedule {
    /// After every look at dockerd, in list order, on the polling thread
    /// (cheap, and ordered with the look it acts on).
    AfterPoll,
    /// On a thread of its own, this often (slow work: it must not delay
    /// the others).
    Every(Duration),
}

pub trait Duty: Sync {
    fn name(&self) -> &'static str;
    fn schedule(&self) -> Schedule;
    /// One round; errors are the duty's to log, the next round retries.
    fn tick(&self, cx: &Ctx, view: &ClusterView);
}
