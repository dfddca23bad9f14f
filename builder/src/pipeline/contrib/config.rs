// SPDX-License-Identifier: Apache-2.0
//! HCBOOT's `homecloud.toml` (the cluster configuration, editable from any
//! OS before first boot) and its `README.txt`.

use anyhow::Result;

use crate::pipeline::contributor::{Contribution, Contributor, Ctx};

pub struct Config;

const HCBOOT_README: &str = "hc-image boot partition (HCBOOT)

homecloud.toml  the cluster configuration. Edit it with any text editor
                before the first boot; per-node settings are matched by MAC.
hc-image/       what this image was built from.
";

impl Contributor for Config {
    fn name(&self) -> &'static str {
        "config"
    }
    fn contribute(&self, cx: &Ctx, out: &mut Contribution) -> Result<()> {
        out.hcboot_file("homecloud.toml", cx.req.config_bytes.clone());
        out.hcboot_file(
            "README.txt",
            HCBOOT_README.replace('\n', "\r\n").into_bytes(),
        );
        Ok(())
    }
}
