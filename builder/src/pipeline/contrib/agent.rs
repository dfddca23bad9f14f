// SPDX-License-Identifier: Apache-2.0
//! The first-boot agent, `/usr/libexec/hc-firstboot`, built for the
//! board's architecture (or named by `HC_AGENT_BINARY`, see crate::agent).

use anyhow::{Context, Result};

use crate::pipeline::contributor::{Contribution, Contributor, Ctx};

pub struct Agent;

impl Contributor for Agent {
    fn name(&self) -> &'static str {
        "agent"
    }
    fn applies(&self, cx: &Ctx) -> bool {
        cx.req.profile.agent
    }
    fn contribute(&self, cx: &Ctx, out: &mut Contribution) -> Result<()> {
        let bin = cx.req.agent_binary()?;
        let data = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
        out.file("usr/libexec/hc-firstboot", data, 0o755);
        Ok(())
    }
}
