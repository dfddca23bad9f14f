// SPDX-License-Identifier: Apache-2.0
//! The service images of the profile's `containers`, built for the board's
//! architecture (crate::oci) and carried as one OCI layout under
//! `/usr/share/hc-image/images/`; first boot seeds the node's registry
//! from it, so no image is ever pulled from outside.

use anyhow::{Context, Result};

use crate::error::InputError;
use crate::pipeline::contributor::{Contribution, Contributor, Ctx};
use crate::tarstream::{Extra, ExtraKind};

/// Where the layout lives in the root filesystem (the agent reads it).
pub const DIR: &str = "usr/share/hc-image/images";

pub struct Containers;

impl Contributor for Containers {
    fn name(&self) -> &'static str {
        "containers"
    }
    fn applies(&self, cx: &Ctx) -> bool {
        !cx.req.profile.containers.is_empty()
    }
    fn contribute(&self, cx: &Ctx, out: &mut Contribution) -> Result<()> {
        let names = &cx.req.profile.containers;
        let root = &cx.req.dirs.root;
        let known = crate::oci::recipe::names(root);
        for (i, n) in names.iter().enumerate() {
            if !known.contains(n) {
                return Err(InputError::new(
                    &cx.req.profile_file,
                    format!("containers[{i}]"),
                    format!("{n:?} is not a recipe of images/containers"),
                    format!("use one of: {}", known.join(", ")),
                )
                .into());
            }
        }
        if !names.iter().any(|n| n == "registry") {
            return Err(InputError::new(
                &cx.req.profile_file,
                "containers",
                "the images are served by the node's registry, which is not listed",
                "add \"registry\" to containers",
            )
            .into());
        }
        let arch = cx.req.board.arch;
        let work = tempfile::tempdir().context("a directory for the service images")?;
        crate::oci::build(root, names, arch, work.path())?;
        let dirs = [
            "usr/share/hc-image".to_string(),
            DIR.to_string(),
            format!("{DIR}/oci"),
            format!("{DIR}/oci/blobs"),
            format!("{DIR}/oci/blobs/sha256"),
            format!("{DIR}/sbom"),
        ];
        for d in dirs {
            out.replace(Extra {
                path: d,
                kind: ExtraKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
        }
        let layout = work.path().join(format!("oci-{}", arch.debian()));
        let mut files = vec![
            (layout.join("oci-layout"), format!("{DIR}/oci/oci-layout")),
            (layout.join("index.json"), format!("{DIR}/oci/index.json")),
            (
                layout.join("manifest.json"),
                format!("{DIR}/oci/manifest.json"),
            ),
            (
                work.path().join(format!("images-{}.json", arch.debian())),
                format!("{DIR}/images.json"),
            ),
        ];
        for (from, to) in [
            (
                layout.join("blobs/sha256"),
                format!("{DIR}/oci/blobs/sha256"),
            ),
            (work.path().join("sbom"), format!("{DIR}/sbom")),
        ] {
            let mut names: Vec<_> = std::fs::read_dir(&from)
                .with_context(|| format!("reading {}", from.display()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()?;
            names.sort();
            for n in names {
                files.push((from.join(&n), format!("{to}/{}", n.to_string_lossy())));
            }
        }
        for (from, to) in files {
            let data =
                std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            out.file(&to, data, 0o644);
        }
        Ok(())
    }
}
