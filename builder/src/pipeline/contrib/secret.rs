// SPDX-License-Identifier: Apache-2.0
//! The cluster secret, `/etc/hc-image/cluster.key` (0600), for images that
//! ship the agent. Made on the build host on first use (crate::secret).

use anyhow::Result;

use crate::pipeline::contributor::{Contribution, Contributor, Ctx};

pub struct Secret;

impl Contributor for Secret {
    fn name(&self) -> &'static str {
        "secret"
    }
    fn applies(&self, cx: &Ctx) -> bool {
        cx.req.profile.agent
    }
    fn contribute(&self, cx: &Ctx, out: &mut Contribution) -> Result<()> {
        let secret = cx.req.secret()?;
        out.file(
            "etc/hc-image/cluster.key",
            secret.to_file_text().into_bytes(),
            0o600,
        );
        Ok(())
    }
}
