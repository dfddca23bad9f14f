// SPDX-License-Identifier: Apache-2.0
//! `hc-image build` (build host) as a sequence of typed stages:
//! [`Request`] (inputs resolved and checked) -> [`Base`] (the root to start
//! from) -> [`Staged`] (what the contributors add) -> [`Layout`] (the plan)
//! -> [`Filesystems`] -> [`Verified`] -> [`Disk`] (table and blobs) ->
//! [`Outputs`] (artifacts). Every output is written as `*.partial` and
//! renamed only after the filesystems, table and blobs were read back.

pub mod base;
pub mod contrib;
pub mod contributor;
mod filesystems;
mod manifest;
mod outputs;
mod report;
pub mod request;
mod stage;

pub use request::BuildOpts;

use std::path::PathBuf;

use anyhow::Result;

use crate::plan::{self, Layout};
use base::Base;
use filesystems::{Disk, Filesystems, Verified};
use outputs::Outputs;
use report::Reporter;
use request::Request;
use stage::Staged;

#[derive(Debug)]
pub struct BuildResult {
    pub image: PathBuf,
    pub zst: PathBuf,
    pub bmap: PathBuf,
    pub manifest: PathBuf,
    pub sums: PathBuf,
    pub timings: Vec<(&'static str, f64)>,
}

pub fn build(opts: &BuildOpts) -> Result<BuildResult> {
    let mut rep = Reporter::new();
    rep.stage("inputs");
    let req = Request::resolve(opts)?;
    let work = req.work_dir()?;

    rep.stage("blobs");
    let blobs = (req.board.blobs.iter().enumerate())
        .map(|(i, b)| crate::blobs::fetch_blob(b, &req.board_file, i))
        .collect::<Result<Vec<_>>>()?;

    rep.stage("base");
    let (base, base_hash) = Base::get(&req, work.path())?;
    let ids = base.stable_ids(req.stable_ids());

    rep.stage("stage");
    let staged = Staged::new(&req, &base, &ids)?;

    rep.stage("plan");
    let root_size = base.root_size(&staged.root, &req)?;
    let layout: Layout = plan::plan(&req.board, &req.board_file, root_size, ids)?;
    let out = Outputs::new(
        &req.out,
        &format!("{}-{}", req.profile.name, req.board.name),
    );
    let img = out.create_image(layout.disk_size)?;

    rep.stage("filesystems");
    let img_path = &out.img.partial;
    let fs = Filesystems::write(
        &req,
        &base,
        &staged,
        &layout,
        img,
        img_path,
        work.path(),
        &rep,
    )?;
    let xattrs = fs.xattrs;

    rep.stage("verify");
    let verified: Verified = fs.verify(img_path, &layout)?;

    rep.stage("table");
    let Disk = verified.finish(&layout, &blobs, &req)?;

    rep.stage("artifacts");
    let digest =
        crate::artifacts::digest_and_compress(img_path, &out.zst.partial, &out.bmap.partial)?;
    let base_sha256 = base_hash.wait()?;
    let m = manifest::manifest(
        &req,
        &out,
        &manifest::Record {
            base: &base,
            base_sha256: &base_sha256,
            layout: &layout,
            digest: &digest,
            xattrs,
        },
    )?;
    out.write_records(&m, &digest)?;
    let out = out.publish()?;
    rep.finish();
    Ok(BuildResult {
        image: out.img.path.clone(),
        zst: out.zst.path.clone(),
        bmap: out.bmap.path.clone(),
        manifest: out.manifest.path.clone(),
        sums: out.sums.path.clone(),
        timings: std::mem::take(&mut rep.timings),
    })
}
