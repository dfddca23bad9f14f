// SPDX-License-Identifier: Apache-2.0
//! Build contributors (build host): everything the builder adds to the
//! base's root filesystem or to HCBOOT, one file per thing, each a
//! [`Contributor`]. [`CONTRIBUTORS`] lists them; the pipeline runs them in
//! that order, and the order is part of the image's bytes (a later entry
//! replaces an earlier one at the same path, and the FAT is written in
//! entry order).
//!
//! To add one: a file here with a unit struct implementing [`Contributor`],
//! its `mod` line below and its entry in [`CONTRIBUTORS`]
//! (docs/architecture.md, "How to add a build contributor").

use anyhow::Result;

use super::contributor::{Contribution, Contributor, Ctx};

mod agent;
mod boot;
mod build_json;
mod config;
mod containers;
mod esp;
mod overlays;
mod secret;
mod updated;

/// What contributors add to the image, in order.
pub static CONTRIBUTORS: &[&dyn Contributor] = &[
    &overlays::Overlays,
    &agent::Agent,
    &containers::Containers,
    &secret::Secret,
    &boot::BootEntries,
    &updated::Updated,
    &config::Config,
    &build_json::BuildJson,
    &esp::Esp,
];

/// Runs every contributor that applies, in [`CONTRIBUTORS`] order.
pub fn contribute(cx: &Ctx) -> Result<Contribution> {
    let mut out = Contribution::default();
    for c in CONTRIBUTORS {
        if c.applies(cx) {
            tracing::debug!("contributor {}", c.name());
            c.contribute(cx, &mut out)?;
        }
    }
    Ok(out)
}
