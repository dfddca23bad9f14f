// SPDX-License-Identifier: Apache-2.0
//! Stage 3, the staged contents: what the contributors add to the root and
//! to HCBOOT, plus the parent directories the base lacks.

use anyhow::Result;

use super::base::Base;
use super::contrib;
use super::contributor::Ctx;
use super::request::Request;
use crate::fs::FatEntry;
use crate::plan::StableIds;
use crate::tarstream::Extra;

/// The root's additions and HCBOOT's contents, in the order they are written.
pub struct Staged {
    pub root: Vec<Extra>,
    pub hcboot: Vec<FatEntry>,
}

impl Staged {
    pub fn new(req: &Request, base: &Base, ids: &StableIds) -> Result<Staged> {
        let mut c = contrib::contribute(&Ctx { req, base, ids })?;
        let mut parents = base.missing_parents(&c.root)?;
        c.root.append(&mut parents);
        Ok(Staged {
            root: c.root,
            hcboot: c.hcboot,
        })
    }
}
