// SPDX-License-Identifier: Apache-2.0
//! `cluster.timezone`: `/etc/localtime` (what timedatectl and libc read) and
//! `/etc/timezone` (Debian's record of the name).

use std::collections::BTreeMap;

use crate::config::ZONEINFO;
use crate::engine::{Ctx, Observed, Result, Step};
use crate::host::files::{read_trimmed, write_atomic, PUBLIC};

pub struct Timezone;

const LOCALTIME: &str = "/etc/localtime";
const TIMEZONE: &str = "/etc/timezone";

/// The zone `/etc/localtime` points at, if it is a link into the database.
pub fn current(cx: &Ctx) -> Option<String> {
    let target = std::fs::read_link(cx.path(LOCALTIME)).ok()?;
    let t = target.to_string_lossy();
    let rel = t.trim_start_matches("../").trim_start_matches('/');
    rel.strip_prefix(ZONEINFO.trim_start_matches('/'))
        .map(|z| z.trim_start_matches('/').to_string())
}

impl Step for Timezone {
    fn name(&self) -> &'static str {
        "timezone"
    }
    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        let want = &cx.config.cluster.timezone;
        let named = read_trimmed(&cx.path(TIMEZONE));
        Ok(
            if current(cx).as_deref() == Some(want.as_str()) && named.as_deref() == Some(want) {
                Observed::Done(BTreeMap::from([("zone".into(), want.clone())]))
            } else {
                Observed::Pending
            },
        )
    }
    fn apply(&self, cx: &Ctx) -> Result<()> {
        let want = &cx.config.cluster.timezone;
        let zone = format!("{ZONEINFO}/{want}");
        if !cx.path(&zone).is_file() {
            return Err(format!(
                "cluster.timezone {want:?} is not in this node's zone database ({zone}); \
                 keeping {}",
                current(cx).unwrap_or_else(|| "the zone it has".into())
            ));
        }
        // A new link renamed over the old one: never a moment without it.
        let link = cx.path(LOCALTIME);
        let tmp = cx.path("/etc/.localtime.hc-tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&zone, &tmp)
            .and_then(|()| std::fs::rename(&tmp, &link))
            .map_err(|e| format!("linking {} to {zone}: {e}", link.display()))?;
        write_atomic(&cx.path(TIMEZONE), format!("{want}\n").as_bytes(), PUBLIC)
    }
}
