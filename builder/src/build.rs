// SPDX-License-Identifier: Apache-2.0
//! `hc-image build` (build host): inputs -> plan -> filesystems -> verified
//! disk -> artifacts. Every output is written as `*.partial` and renamed only
//! after the filesystems, table and blobs were read back.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use hc_firstboot::config::HomecloudConfig;
use serde_json::json;

use crate::artifacts;
use crate::blobs;
use crate::error::InputError;
use crate::exec::{self, tools};
use crate::fs::{self as hfs, Ext4Params, FatEntry};
use crate::plan::{self, Layout, PartRole};
use crate::size::{human, Size};
use crate::spec::{BoardSpec, DataDirs, ImageProfile};
use crate::stage;
use crate::tarstream::{self, Extra, TreeStats};

/// Everything `build` needs, from the CLI or a test.
#[derive(Debug, Clone)]
pub struct BuildOpts {
    pub board: String,
    pub config: PathBuf,
    pub image: String,
    pub rootfs: Option<PathBuf>,
    pub base: Option<PathBuf>,
    pub base_sha256: Option<String>,
    pub out: PathBuf,
    pub root_size: Option<Size>,
    /// Overlays added after the profile's (e.g. `test-oracle` in QEMU tests).
    pub extra_overlays: Vec<String>,
    /// Rebuild the package base even when cached.
    pub refresh_base: bool,
    /// The cluster secret file; None: the per-cluster default, made if missing.
    pub cluster_secret: Option<PathBuf>,
}

#[derive(Debug)]
pub struct BuildResult {
    pub image: PathBuf,
    pub zst: PathBuf,
    pub bmap: PathBuf,
    pub manifest: PathBuf,
    pub sums: PathBuf,
    pub timings: Vec<(&'static str, f64)>,
}

/// One line per stage, timed; a spinner instead when stderr is a terminal.
struct Reporter {
    timings: Vec<(&'static str, f64)>,
    current: Option<(&'static str, Instant)>,
    bar: Option<indicatif::ProgressBar>,
}

impl Reporter {
    fn new() -> Self {
        use std::io::IsTerminal;
        let bar = (std::io::stderr().is_terminal() && tracing::enabled!(tracing::Level::INFO))
            .then(|| {
                let b = indicatif::ProgressBar::new_spinner();
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                b
            });
        Reporter {
            timings: Vec::new(),
            current: None,
            bar,
        }
    }
    fn stage(&mut self, name: &'static str) {
        self.finish();
        match &self.bar {
            Some(b) => b.set_message(format!("{name}...")),
            None => tracing::info!("running {name}"),
        }
        self.current = Some((name, Instant::now()));
    }
    fn elapsed(&self) -> f64 {
        self.current.map_or(0.0, |(_, t)| t.elapsed().as_secs_f64())
    }
    fn finish(&mut self) {
        if let Some((name, t)) = self.current.take() {
            let s = t.elapsed().as_secs_f64();
            match &self.bar {
                Some(b) => b.println(format!("  {name:<12} {s:>6.1}s")),
                None => tracing::info!("finished {name} in {s:.1}s"),
            }
            self.timings.push((name, s));
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Outputs of one build, removed on failure.
struct Partials(Vec<PathBuf>);

impl Partials {
    fn add(&mut self, final_path: &Path) -> PathBuf {
        let p = partial(final_path);
        self.0.push(p.clone());
        p
    }
}

impl Drop for Partials {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub fn partial(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

pub fn source_date_epoch(profile: &ImageProfile) -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v.trim().parse().map_err(|_| {
            InputError::new(
                "environment",
                "SOURCE_DATE_EPOCH",
                format!("{v:?} is not a number of seconds"),
                "unset it or give seconds since 1970",
            )
            .into()
        }),
        _ => Ok(profile.source_date_epoch),
    }
}

enum BaseHash {
    Done(String),
    Pending(std::thread::JoinHandle<Result<String>>),
}

/// The root filesystem source.
enum Base {
    Rootfs { path: PathBuf, stats: TreeStats },
    Armbian(crate::armbian::Imported),
}

/// The agent built beside the base; joined on drop, so an early error does
/// not leave its compiler running behind the process.
struct AgentJob(Option<std::thread::JoinHandle<Result<PathBuf>>>);

impl Drop for AgentJob {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            let _ = job.join();
        }
    }
}

pub fn build(opts: &BuildOpts) -> Result<BuildResult> {
    let dirs = DataDirs::locate();
    let mut rep = Reporter::new();
    rep.stage("inputs");
    let (board, board_path) = dirs.load_board(&opts.board)?;
    let board_file = format!("boards/{}.toml", board.name);
    let (profile, profile_path) = dirs.load_profile(&opts.image)?;
    let config = HomecloudConfig::load(&opts.config)?;
    let config_bytes = std::fs::read(&opts.config)
        .with_context(|| format!("reading {}", opts.config.display()))?;
    if opts.rootfs.is_some() && opts.base.is_some() {
        return Err(InputError::new(
            "command line",
            "--rootfs/--base",
            "both given",
            "pass one: --rootfs for a tarball or --base for an Armbian image",
        )
        .into());
    }
    exec::check_host_tools()?;
    // A cold package base is tens of minutes of emulated dpkg on about one
    // core: the agent compiles on the other meanwhile.
    let mut agent_job = AgentJob(
        (profile.agent && opts.rootfs.is_none() && opts.base.is_none() && profile.base.is_some())
            .then(|| {
                let arch = board.arch;
                std::thread::spawn(move || crate::agent::ensure(&crate::agent::source_root(), arch))
            }),
    );
    let mut packages: Option<crate::base::CachedBase> = None;
    let rootfs = match (&opts.rootfs, &opts.base, &profile.base) {
        (None, None, None) => {
            return Err(InputError::new(
                format!("images/{}.toml", profile.name),
                "base",
                "no [base] package set and no --rootfs or --base given",
                "add a [base] table, or pass --rootfs ROOTFS.tar[.zst|.xz] or --base Armbian_*.img[.xz]",
            )
            .into())
        }
        (None, None, Some(spec)) => {
            let b = crate::base::ensure(spec, board.arch, &profile.name, opts.refresh_base)?;
            let p = b.tarball.clone();
            packages = Some(b);
            Some(p)
        }
        (r, _, _) => r.clone(),
    };
    let sde = source_date_epoch(&profile)?;

    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating output directory {}", opts.out.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".hc-work-")
        .tempdir_in(&opts.out)
        .with_context(|| format!("creating a work directory in {}", opts.out.display()))?;

    rep.stage("blobs");
    let mut blob_data = Vec::new();
    for (i, b) in board.blobs.iter().enumerate() {
        blob_data.push(blobs::fetch_blob(b, &board_file, i)?);
    }

    rep.stage("base");
    let (base, base_hash) = match (&rootfs, &opts.base) {
        (Some(path), _) => {
            // mke2fs is single-threaded: hash the input on the other core meanwhile.
            let src = path.clone();
            let hasher = std::thread::spawn(move || artifacts::sha256_file(&src));
            let stats = scan_rootfs(path)?;
            (
                Base::Rootfs {
                    path: path.clone(),
                    stats,
                },
                BaseHash::Pending(hasher),
            )
        }
        (None, Some(img)) => {
            let imp =
                crate::armbian::import(img, opts.base_sha256.as_deref(), &board, work.path())?;
            let sha = imp.sha256.clone();
            (Base::Armbian(imp), BaseHash::Done(sha))
        }
        (None, None) => return Err(unreachable_base()),
    };

    let ids = plan::stable_ids(
        format!("{}\0{}\0{}", board.name, profile.name, config.cluster.name).as_bytes(),
    );
    let ids = match &base {
        // Armbian's fstab and armbianEnv.txt name the root by UUID: keep it.
        Base::Armbian(imp) => plan::StableIds {
            root_uuid: imp.uuid.clone(),
            ..ids
        },
        Base::Rootfs { .. } => ids,
    };
    rep.stage("stage");
    let mut overlay_profile = profile.clone();
    for o in &opts.extra_overlays {
        if o.contains('/') || !dirs.overlays().join(o).is_dir() {
            return Err(InputError::new(
                "command line",
                "--extra-overlay",
                format!("no overlay directory overlays/{o}"),
                "name a directory under overlays/",
            )
            .into());
        }
        overlay_profile.overlays.push(o.clone());
    }
    let mut extras = stage::overlay_extras(&overlay_profile, &dirs.overlays())?;
    let mut secret_fingerprint: Option<String> = None;
    if profile.agent {
        let bin = match agent_job.0.take() {
            Some(job) => job
                .join()
                .map_err(|_| anyhow::anyhow!("the agent build thread panicked"))??,
            None => crate::agent::ensure(&crate::agent::source_root(), board.arch)?,
        };
        let data = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
        stage::add_file(&mut extras, "usr/libexec/hc-firstboot", data, 0o755);
        let secret = crate::secret::ensure(opts.cluster_secret.as_deref(), &config.cluster.name)?;
        secret_fingerprint = Some(secret.fingerprint());
        stage::add_file(
            &mut extras,
            "etc/hc-image/cluster.key",
            secret.to_file_text().into_bytes(),
            0o600,
        );
    }
    if let Base::Rootfs { stats, .. } = &base {
        for e in stage::boot_extras(
            &board,
            &stats.kernels,
            &stats.initrds,
            &ids.root_uuid,
            &profile.disk.root_label,
        ) {
            extras.retain(|x| x.path != e.path);
            extras.push(e);
        }
    }
    if packages.is_some() {
        // The package base ran ldconfig, hwdb and catalog updates at build
        // time and mmdebstrap clamped every mtime to SOURCE_DATE_EPOCH: mark
        // /etc and /var up to date so first boot skips the
        // ConditionNeedsUpdate= units (minutes under emulation, seconds on a card).
        let stamp = format!(
            "# Written by hc-image: /usr was last updated at build time.\nTIMESTAMP_NSEC={sde}000000000\n"
        );
        for p in ["etc/.updated", "var/.updated"] {
            stage::add_file(&mut extras, p, stamp.clone().into_bytes(), 0o644);
        }
    }
    let build_json = serde_json::to_vec_pretty(&json!({
        "board": board.name,
        "image": profile.name,
        "cluster": config.cluster.name,
        "cluster_secret_fingerprint": secret_fingerprint,
        "hc_image_version": env!("CARGO_PKG_VERSION"),
        "source_date_epoch": sde,
    }))?;
    stage::add_file(
        &mut extras,
        "etc/hc-image/build.json",
        build_json.clone(),
        0o644,
    );
    let armbian_dirs = match &base {
        Base::Armbian(imp) => {
            let mut wanted = Vec::new();
            for e in &extras {
                let mut p = e.path.as_str();
                while let Some((parent, _)) = p.rsplit_once('/') {
                    wanted.push(parent.to_string());
                    p = parent;
                }
            }
            crate::armbian::existing_dirs(&imp.root_file, &wanted)?
        }
        Base::Rootfs { .. } => Default::default(),
    };
    let present = |p: &str| match &base {
        Base::Rootfs { stats, .. } => stats.dirs.contains(p),
        Base::Armbian(_) => armbian_dirs.contains(p),
    };
    let mut parents = stage::missing_parents(&extras, &present);
    extras.append(&mut parents);

    rep.stage("plan");
    let profile_file = format!("images/{}.toml", profile.name);
    let root_size = match &base {
        Base::Rootfs { stats, .. } => root_size_for(stats, &extras, &profile, opts, &profile_file)?,
        Base::Armbian(imp) => imp.fs_size,
    };
    let layout = plan::plan(&board, &board_file, root_size, ids)?;

    let name = format!("{}-{}", profile.name, board.name);
    let img_final = opts.out.join(format!("{name}.img"));
    let zst_final = opts.out.join(format!("{name}.img.zst"));
    let bmap_final = opts.out.join(format!("{name}.img.bmap"));
    let manifest_final = opts.out.join("manifest.json");
    let sums_final = opts.out.join("SHA256SUMS");
    let mut partials = Partials(Vec::new());
    let img_path = partials.add(&img_final);
    let zst_path = partials.add(&zst_final);
    let bmap_path = partials.add(&bmap_final);
    let manifest_path = partials.add(&manifest_final);
    let sums_path = partials.add(&sums_final);

    let mut img = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&img_path)
        .with_context(|| format!("creating {}", img_path.display()))?;
    img.set_len(layout.disk_size)
        .with_context(|| format!("sizing {} to {}", img_path.display(), layout.disk_size))?;

    rep.stage("filesystems");
    let boot = layout.part(PartRole::Boot);
    let fat_file = work.path().join("hcboot.vfat");
    let mut fat_entries = vec![
        FatEntry::File("homecloud.toml".into(), config_bytes.clone()),
        FatEntry::File(
            "README.txt".into(),
            HCBOOT_README.replace('\n', "\r\n").into_bytes(),
        ),
        FatEntry::Dir("hc-image".into()),
        FatEntry::File("hc-image/build.json".into(), build_json),
    ];
    if board.disk.boot_is_esp {
        fat_entries.push(FatEntry::Dir("EFI".into()));
        fat_entries.push(FatEntry::Dir("EFI/BOOT".into()));
        if let Base::Rootfs { stats, .. } = &base {
            fat_entries.extend(stage::esp_entries(&board, stats, &layout.ids.root_uuid));
        }
    }
    hfs::make_fat(
        &fat_file,
        boot.region.len(),
        &boot.label,
        layout.ids.boot_volume_id,
        &fat_entries,
        sde,
        work.path(),
    )?;
    hfs::copy_into(&fat_file, &img, boot.region.start)?;
    tracing::debug!("HCBOOT written at {:.1}s", rep.elapsed());
    let root = layout.part(PartRole::Root);
    let xattr_report = match &base {
        Base::Rootfs { path, stats } => {
            let params = Ext4Params {
                image: &img_path,
                offset: root.region.start,
                size: root.region.len(),
                label: &profile.disk.root_label,
                uuid: &layout.ids.root_uuid,
                hash_seed: &layout.ids.root_hash_seed,
                inodes: inode_count(stats, &extras, root.region.len()),
                source_date_epoch: sde,
                workdir: work.path(),
            };
            let mut report = None;
            hfs::make_ext4(&params, |w| {
                let r = tarstream::open_tar(path)?;
                let mut bw = std::io::BufWriter::with_capacity(1 << 20, w);
                report = Some(tarstream::merge(r, &extras, sde, &mut bw)?);
                bw.flush().context("flushing the root tar stream")?;
                Ok(())
            })?;
            let report = report.context("merge produced no report")?;
            tracing::debug!("mke2fs done at {:.1}s", rep.elapsed());
            hfs::set_xattrs(&img_path, root.region.start, &report.xattrs, work.path())?;
            report.xattrs.len()
        }
        Base::Armbian(imp) => {
            crate::armbian::apply_extras(imp, &extras, work.path())?;
            hfs::copy_into(&imp.root_file, &img, root.region.start)?;
            0
        }
    };

    rep.stage("verify");
    hfs::check_ext4(&img_path, root.region.start)?;
    let fat_sha = artifacts::sha256_file(&fat_file)?;
    let fat_back = hfs::hash_region(&img, boot.region.start, boot.region.len())?;
    if fat_sha != fat_back {
        anyhow::bail!("HCBOOT read back with sha256 {fat_back}, wrote {fat_sha}");
    }

    rep.stage("table");
    disk_finish(&mut img, &layout, &blob_data, &board)?;
    drop(img);

    rep.stage("artifacts");
    let digest = artifacts::digest_and_compress(&img_path, &zst_path, &bmap_path)?;
    let base_sha256 = match base_hash {
        BaseHash::Done(s) => s,
        BaseHash::Pending(h) => h
            .join()
            .map_err(|_| anyhow::anyhow!("hashing thread panicked"))??,
    };

    let manifest = manifest(&ManifestInputs {
        board: &board,
        board_path: &board_path,
        profile: &profile,
        profile_path: &profile_path,
        config_path: &opts.config,
        config_bytes: &config_bytes,
        base: &base,
        base_sha256: &base_sha256,
        layout: &layout,
        sde,
        digest: &digest,
        names: (&img_final, &zst_final, &bmap_final),
        extra_xattrs: xattr_report,
        packages: packages.as_ref(),
    })?;
    write_synced(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
    let fname = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let sums = format!(
        "{}  {}\n{}  {}\n{}  {}\n",
        digest.sha256,
        fname(&img_final),
        digest.zst_sha256,
        fname(&zst_final),
        digest.bmap_sha256,
        fname(&bmap_final)
    );
    write_synced(&sums_path, sums.as_bytes())?;

    for (from, to) in [
        (&img_path, &img_final),
        (&zst_path, &zst_final),
        (&bmap_path, &bmap_final),
        (&sums_path, &sums_final),
        (&manifest_path, &manifest_final),
    ] {
        std::fs::rename(from, to)
            .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
    }
    partials.0.clear();
    if let Ok(d) = File::open(&opts.out) {
        let _ = d.sync_all();
    }
    rep.finish();
    Ok(BuildResult {
        image: img_final,
        zst: zst_final,
        bmap: bmap_final,
        manifest: manifest_final,
        sums: sums_final,
        timings: std::mem::take(&mut rep.timings),
    })
}

fn unreachable_base() -> anyhow::Error {
    anyhow::anyhow!("no root filesystem source")
}

const HCBOOT_README: &str = "hc-image boot partition (HCBOOT)

homecloud.toml  the cluster configuration. Edit it with any text editor
                before the first boot; per-node settings are matched by MAC.
hc-image/       what this image was built from.
";

fn scan_rootfs(path: &Path) -> Result<TreeStats> {
    let bad = |problem: String| {
        InputError::new(
            path.display().to_string(),
            "--rootfs",
            problem,
            "pass an uncompressed, .zst or .xz tar of a root filesystem, complete (e.g. `mmdebstrap --variant=minbase trixie rootfs.tar`)",
        )
    };
    let scanned = if tarstream::is_compressed(path)? {
        tarstream::scan(tarstream::open_tar(path)?)
    } else {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        tarstream::scan_file(f)
    };
    scanned.map_err(|e| bad(format!("{e:#}")).into())
}

fn extras_bytes(extras: &[Extra]) -> (u64, u64) {
    let mut bytes = 0;
    for e in extras {
        bytes += match &e.kind {
            tarstream::ExtraKind::File(d) => (d.len() as u64).div_ceil(4096) * 4096,
            _ => 4096,
        };
    }
    (bytes, extras.len() as u64)
}

fn root_size_for(
    stats: &TreeStats,
    extras: &[Extra],
    profile: &ImageProfile,
    opts: &BuildOpts,
    profile_file: &str,
) -> Result<u64> {
    let mut st = stats.clone();
    let (b, n) = extras_bytes(extras);
    st.block_bytes += b;
    st.inodes += n;
    let (size, key, file) = match (opts.root_size, profile.disk.root_size) {
        (Some(s), _) => (s.bytes(), "--root-size", "command line"),
        (None, Some(s)) => (s.bytes(), "disk.root_size", profile_file),
        (None, None) => return Ok(hfs::auto_root_size(&st, profile.disk.root_free.bytes())),
    };
    let need = hfs::ext4_needed(&st, size);
    if need > size {
        return Err(InputError::new(
            file,
            key,
            format!(
                "the root tree needs at least {} ({} bytes) in ext4 but the root filesystem is {}",
                human(need),
                need,
                human(size)
            ),
            format!(
                "raise it to {} or more, or leave it unset to size from the content",
                Size(hfs::auto_root_size(&st, 0).div_ceil(crate::size::MIB) * crate::size::MIB)
            ),
        )
        .into());
    }
    Ok(size)
}

fn inode_count(stats: &TreeStats, extras: &[Extra], fs_size: u64) -> u64 {
    let want = (stats.inodes + extras.len() as u64) * 5 / 4 + 1024;
    want.max(fs_size / 16384)
}

fn disk_finish(
    img: &mut File,
    layout: &Layout,
    blob_data: &[Vec<u8>],
    board: &BoardSpec,
) -> Result<()> {
    crate::disk::write_blobs(img, layout, blob_data)?;
    crate::disk::write_table(img, layout)?;
    img.sync_all().context("syncing the image")?;
    let shas: Vec<String> = board.blobs.iter().map(|b| b.sha256.clone()).collect();
    crate::disk::verify_table_and_blobs(img, layout, &shas)
        .context("reading the partition table and blobs back")?;
    Ok(())
}

fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

struct ManifestInputs<'a> {
    board: &'a BoardSpec,
    board_path: &'a Path,
    profile: &'a ImageProfile,
    profile_path: &'a Path,
    config_path: &'a Path,
    config_bytes: &'a [u8],
    base: &'a Base,
    base_sha256: &'a str,
    layout: &'a Layout,
    sde: u64,
    digest: &'a artifacts::ImageDigest,
    names: (&'a Path, &'a Path, &'a Path),
    extra_xattrs: usize,
    packages: Option<&'a crate::base::CachedBase>,
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn manifest(m: &ManifestInputs) -> Result<serde_json::Value> {
    let sha = |p: &Path| artifacts::sha256_file(p);
    let base = match m.base {
        Base::Rootfs { path, stats } if m.packages.is_some() => {
            let p = m.packages.context("packages")?;
            let list: serde_json::Map<String, serde_json::Value> = p
                .packages
                .iter()
                .map(|(n, v)| (n.clone(), json!(v)))
                .collect();
            json!({
                "kind": "packages",
                "file": file_name(path),
                "sha256": m.base_sha256,
                "recipe": crate::base::recipe(m.profile.base.as_ref().context("base")?, m.board.arch),
                "cache_key": p.key,
                "members": stats.members,
                "packages": list,
            })
        }
        Base::Rootfs { path, stats } => json!({
            "kind": "rootfs",
            "file": file_name(path),
            "sha256": m.base_sha256,
            "members": stats.members,
        }),
        Base::Armbian(imp) => json!({
            "kind": "armbian",
            "file": file_name(&imp.source),
            "sha256": m.base_sha256,
            "root_partition": imp.partition,
            "root_uuid": imp.uuid,
            "ext4_features": imp.features,
        }),
    };
    let partitions: Vec<_> = m
        .layout
        .partitions
        .iter()
        .map(|p| {
            json!({
                "number": p.number,
                "label": p.label,
                "start": p.region.start,
                "size": p.region.len(),
                "type": match m.layout.table {
                    crate::spec::TableKind::Mbr => format!("0x{:02x}", p.mbr_type),
                    crate::spec::TableKind::Gpt => p.gpt_type.to_string(),
                },
                "guid": (m.layout.table == crate::spec::TableKind::Gpt).then(|| p.gpt_guid.clone()),
                "bootable": p.bootable,
                "filesystem": match p.role { PartRole::Boot => "vfat", PartRole::Root => "ext4" },
                "fs_id": match p.role {
                    PartRole::Boot => format!("{:08X}", m.layout.ids.boot_volume_id),
                    PartRole::Root => m.layout.ids.root_uuid.to_ascii_lowercase(),
                },
            })
        })
        .collect();
    let blobs: Vec<_> = m
        .board
        .blobs
        .iter()
        .map(|b| {
            json!({
                "name": b.name,
                "package": b.package,
                "version": b.version,
                "deb_sha256": b.deb_sha256,
                "path": b.path,
                "offset": b.offset.bytes(),
                "size": b.size,
                "sha256": b.sha256,
            })
        })
        .collect();
    let overlays: Vec<_> = m
        .profile
        .overlays
        .iter()
        .map(|o| json!({"name": o}))
        .collect();
    let tools: serde_json::Map<String, serde_json::Value> =
        [tools::MKE2FS, tools::MKFS_VFAT, tools::MCOPY]
            .iter()
            .map(|t| (t.to_string(), json!(exec::version(t))))
            .collect();
    Ok(json!({
        "schema": 1,
        "hc_image_version": env!("CARGO_PKG_VERSION"),
        "source_date_epoch": m.sde,
        "board": {"name": m.board.name, "sha256": sha(m.board_path)?},
        "image": {"name": m.profile.name, "sha256": sha(m.profile_path)?, "overlays": overlays},
        "config": {"file": file_name(m.config_path), "sha256": blobs::sha256_hex(m.config_bytes)},
        "base": base,
        "disk": {
            "table": m.layout.table,
            "size": m.layout.disk_size,
            "mbr_signature": (m.layout.table == crate::spec::TableKind::Mbr).then(|| format!("{:08x}", m.layout.ids.mbr_signature)),
            "disk_guid": (m.layout.table == crate::spec::TableKind::Gpt).then(|| m.layout.ids.disk_guid.clone()),
            "partitions": partitions,
            "ext4_features": match m.base { Base::Rootfs { .. } => hfs::EXT4_FEATURES.to_string(), Base::Armbian(imp) => imp.features.clone() },
            "xattrs_set_after_mke2fs": m.extra_xattrs,
        },
        "blobs": blobs,
        "artifacts": {
            "image": {"file": file_name(m.names.0), "size": m.digest.size, "sha256": m.digest.sha256, "mapped_bytes": m.digest.mapped_bytes},
            "zst": {"file": file_name(m.names.1), "sha256": m.digest.zst_sha256},
            "bmap": {"file": file_name(m.names.2), "sha256": m.digest.bmap_sha256},
        },
        "tools": tools,
    }))
}
