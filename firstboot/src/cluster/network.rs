// SPDX-License-Identifier: Apache-2.0
//! The `network` step: wait for an IPv4 address on the LAN.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::engine::{Ctx, Observed, Result, Step};
use crate::host::node::env_secs;

pub struct Network;

impl Step for Network {
    fn name(&self) -> &'static str {
        "network"
    }

    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        Ok(match cx.lan()? {
            Some(l) => Observed::Done(BTreeMap::from([
                ("interface".into(), l.interface),
                ("address".into(), format!("{}/{}", l.addr, l.prefix)),
            ])),
            None => Observed::Pending,
        })
    }

    fn apply(&self, cx: &Ctx) -> Result<()> {
        // DHCP (or static config) is systemd-networkd's job; wait for it.
        let deadline = std::time::Instant::now() + env_secs("HC_NETWORK_TIMEOUT", 600);
        while std::time::Instant::now() < deadline {
            if cx.lan()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        Err("no IPv4 address on the LAN interface: check the cable and the DHCP server".into())
    }
}
