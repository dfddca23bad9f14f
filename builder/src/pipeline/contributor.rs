// SPDX-License-Identifier: Apache-2.0
//! What a build contributor is (build host): a part that adds files to the
//! image's root filesystem or to HCBOOT, given the request, the base and the
//! filesystem ids. The contributors themselves live in `contrib/`, one file
//! each, listed in `contrib::CONTRIBUTORS`.

use anyhow::Result;

use super::base::Base;
use super::request::Request;
use crate::fs::FatEntry;
use crate::plan::StableIds;
use crate::tarstream::{Extra, ExtraKind};

/// What a contributor sees: the request, the base and the filesystem ids.
pub struct Ctx<'a> {
    pub req: &'a Request,
    pub base: &'a Base,
    pub ids: &'a StableIds,
}

/// Adds files to the image's root filesystem or to HCBOOT.
pub trait Contributor: Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// False skips the contributor for this build.
    fn applies(&self, _cx: &Ctx) -> bool {
        true
    }
    fn contribute(&self, cx: &Ctx, out: &mut Contribution) -> Result<()>;
}

/// The files contributed so far.
#[derive(Default)]
pub struct Contribution {
    /// Entries added on top of the base's root, in order.
    pub root: Vec<Extra>,
    /// HCBOOT's contents, in the order they are written.
    pub hcboot: Vec<FatEntry>,
}

impl Contribution {
    /// Adds `e` to the root, replacing an earlier entry at its path.
    pub fn replace(&mut self, e: Extra) {
        self.root.retain(|x| x.path != e.path);
        self.root.push(e);
    }

    /// Adds a root-owned file (and nothing else) to the root.
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.replace(Extra {
            path: path.to_string(),
            kind: ExtraKind::File(data),
            mode,
            uid: 0,
            gid: 0,
        });
    }

    /// Adds a file to HCBOOT (`/`-separated path).
    pub fn hcboot_file(&mut self, path: &str, data: Vec<u8>) {
        self.hcboot.push(FatEntry::File(path.into(), data));
    }

    /// Adds a directory to HCBOOT.
    pub fn hcboot_dir(&mut self, path: &str) {
        self.hcboot.push(FatEntry::Dir(path.into()));
    }
}
