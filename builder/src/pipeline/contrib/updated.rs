// SPDX-License-Identifier: Apache-2.0
//! `/etc/.updated` and `/var/.updated` for the package base.
//!
//! The package base ran ldconfig, hwdb and catalog updates at build time and
//! mmdebstrap clamped every mtime to SOURCE_DATE_EPOCH: marking /etc and
//! /var up to date lets first boot skip the ConditionNeedsUpdate= units
//! (minutes under emulation, seconds on a card).

use anyhow::Result;

use crate::pipeline::contributor::{Contribution, Contributor, Ctx};

pub struct Updated;

impl Contributor for Updated {
    fn name(&self) -> &'static str {
        "updated-stamps"
    }
    fn applies(&self, cx: &Ctx) -> bool {
        cx.base.packages().is_some()
    }
    fn contribute(&self, cx: &Ctx, out: &mut Contribution) -> Result<()> {
        let stamp = format!(
            "# Written by hc-image: /usr was last updated at build time.\nTIMESTAMP_NSEC={}000000000\n",
            cx.req.source_date_epoch
        );
        for p in ["etc/.updated", "var/.updated"] {
            out.file(p, stamp.clone().into_bytes(), 0o644);
        }
        Ok(())
    }
}
