// SPDX-License-Identifier: Apache-2.0
//! `build.json`: what the image was built from, in the root
//! (`/etc/hc-image/build.json`) and on HCBOOT (`hc-image/build.json`).

use anyhow::Result;
use serde_json::json;

use crate::pipeline::contributor::{Contribution, Contributor, Ctx};

pub struct BuildJson;

impl Contributor for BuildJson {
    fn name(&self) -> &'static str {
        "build.json"
    }
    fn contribute(&self, cx: &Ctx, out: &mut Contribution) -> Result<()> {
        let r = cx.req;
        let fingerprint = match r.profile.agent {
            true => Some(r.secret()?.fingerprint()),
            false => None,
        };
        let build_json = serde_json::to_vec_pretty(&json!({
            "board": r.board.name,
            "image": r.profile.name,
            "cluster": r.config.cluster.name,
            "cluster_secret_fingerprint": fingerprint,
            "hc_image_version": env!("CARGO_PKG_VERSION"),
            "source_date_epoch": r.source_date_epoch,
        }))?;
        out.file("etc/hc-image/build.json", build_json.clone(), 0o644);
        out.hcboot_dir("hc-image");
        out.hcboot_file("hc-image/build.json", build_json);
        Ok(())
    }
}
