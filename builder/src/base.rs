// SPDX-License-Identifier: Apache-2.0
//! The package-built base (build host): `mmdebstrap` makes a root filesystem
//! tarball from the profile's suite and packages (arm64 through qemu-user
//! binfmt, amd64 natively). It is cached outside the repository, keyed by the
//! hash of everything that went into it, so a warm build never runs apt.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::blobs::cache_dir;
use crate::exec;
use crate::spec::{Arch, BaseSpec, ResolvedSource, KEYRINGS_DIR};

/// Bumped when the hooks below change, so old caches are not reused.
const RECIPE_VERSION: u32 = 3;

/// Emulated dpkg is the slow part: regenerate the initramfs once at the end
/// instead of once per trigger, and byte-compile Python once at the end
/// (CUSTOMIZE_PYCOMPILE) instead of once per package.
const ESSENTIAL_HOOK: &str = "for f in /usr/sbin/update-initramfs /usr/bin/py3compile; do chroot \"$1\" dpkg-divert --quiet --local --rename --add $f && ln -s /bin/true \"$1$f\"; done";
const CUSTOMIZE_INITRAMFS: &str = "for f in /usr/sbin/update-initramfs /usr/bin/py3compile; do rm \"$1$f\" && chroot \"$1\" dpkg-divert --quiet --local --rename --remove $f; done && if ls \"$1\"/boot/vmlinuz-* >/dev/null 2>&1; then chroot \"$1\" update-initramfs -c -k all; fi";

/// Byte-compiles the standard library, dist-packages and Ceph's manager
/// modules once, into the cached base. The manager runs as `ceph` and cannot
/// write caches: without these it compiled every import in every module's
/// sub-interpreter on each start, minutes on a small board or under TCG.
/// Hash-checked pycs do not depend on file times. A failed parallel run
/// (no /dev/shm for its workers) is retried serially; `os` proves it worked
/// (exit 1 only means some file has old syntax).
const CUSTOMIZE_PYCOMPILE: &str = "if [ -x \"$1/usr/bin/python3\" ]; then set -- \"$1\" /usr/lib/python3/dist-packages $(cd \"$1\" && ls -d usr/lib/python3.[0-9]* usr/share/ceph/mgr 2>/dev/null | sed 's|^|/|'); r=\"$1\"; shift; c() { chroot \"$r\" python3 -m compileall -q \"$@\" --invalidation-mode checked-hash >/dev/null 2>&1; }; ok() { ls \"$r\"/usr/lib/python3.*/__pycache__/os.cpython-*.pyc >/dev/null 2>&1; }; c -j0 \"$@\"; ok || c \"$@\"; ok; fi";

/// Headless first boot: a unique machine-id per device, no interactive
/// systemd-firstboot on the serial console, no SSH host keys shared by every
/// card, DHCP through systemd-networkd.
const CUSTOMIZE_SYSTEM: &str = "printf 'uninitialized\\n' > \"$1/etc/machine-id\" && rm -f \"$1/var/lib/dbus/machine-id\" \"$1\"/etc/ssh/ssh_host_* && ln -sf /dev/null \"$1/etc/systemd/system/systemd-firstboot.service\" && printf 'homecloud\\n' > \"$1/etc/hostname\" && if [ -e \"$1/usr/lib/systemd/system/systemd-networkd.service\" ]; then chroot \"$1\" systemctl enable systemd-networkd; fi";

/// A cached base tarball and the packages in it.
#[derive(Debug, Clone)]
pub struct CachedBase {
    pub tarball: PathBuf,
    pub packages: Vec<(String, String)>,
    pub key: String,
    pub cold: bool,
}

/// What the base depends on, hashed into the cache key. Reads the extra
/// sources' keyrings (their content is part of the key); [`ensure`] checks
/// them first, so an unreadable keyring only shows here as a null sha256.
pub fn recipe(spec: &BaseSpec, arch: Arch) -> serde_json::Value {
    match spec.resolve_sources() {
        Ok(sources) => recipe_with(spec, arch, &sources),
        Err(_) => {
            let mut r = recipe_with(spec, arch, &[]);
            r["sources"] = spec
                .sources
                .iter()
                .map(|s| json!({"uri": s.uri, "suite": s.suite, "components": s.components, "architectures": s.architectures, "keyring": s.keyring, "keyring_sha256": null}))
                .collect();
            r
        }
    }
}

/// [`recipe`] with the keyrings already read.
pub fn recipe_with(spec: &BaseSpec, arch: Arch, sources: &[ResolvedSource]) -> serde_json::Value {
    let mut pkgs = spec.packages.clone();
    if let Some(extra) = spec.arch.get(arch.debian()) {
        pkgs.extend(extra.packages.iter().cloned());
    }
    pkgs.sort();
    pkgs.dedup();
    let mut r = json!({
        "recipe": RECIPE_VERSION,
        "suite": spec.suite,
        "mirror": spec.mirror,
        "components": spec.components,
        "variant": spec.variant,
        "arch": arch.debian(),
        "packages": pkgs,
        "exclude": spec.exclude,
        "hooks": [ESSENTIAL_HOOK, CUSTOMIZE_INITRAMFS, CUSTOMIZE_PYCOMPILE, CUSTOMIZE_SYSTEM],
    });
    // Only when present, so profiles without extra sources keep their keys.
    if !sources.is_empty() {
        r["sources"] = sources
            .iter()
            .map(|s| {
                json!({
                    "uri": s.source.uri,
                    "suite": s.source.suite,
                    "components": s.source.components,
                    "architectures": s.source.architectures,
                    "keyring": s.keyring_name,
                    "keyring_sha256": s.keyring_sha256,
                })
            })
            .collect();
    }
    r
}

pub fn cache_key(recipe: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(recipe.to_string().as_bytes()))
}

fn binfmt_ready(arch: Arch) -> bool {
    let host_is = |a: &str| std::env::consts::ARCH == a;
    match arch {
        Arch::Amd64 => host_is("x86_64"),
        Arch::Arm64 => {
            host_is("aarch64") || Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists()
        }
    }
}

/// Where a base lives in the cache (`HC_CACHE_DIR/bases/<stem>.*`).
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub key: String,
    pub tarball: PathBuf,
    pub list: PathBuf,
    /// How long the build took (`<stem>.meta.json`), absent in older caches.
    pub meta: PathBuf,
    pub lock: PathBuf,
}

impl CacheEntry {
    pub fn is_cached(&self) -> bool {
        self.tarball.is_file() && self.list.is_file()
    }
}

/// The cache entry of the base, without building anything. Reads the
/// keyrings of extra sources: a missing or mismatching one is an input error.
pub fn lookup(
    spec: &BaseSpec,
    arch: Arch,
    profile: &str,
) -> Result<(CacheEntry, serde_json::Value, Vec<ResolvedSource>)> {
    let sources = spec.resolve_sources()?;
    let r = recipe_with(spec, arch, &sources);
    let key = cache_key(&r);
    let dir = cache_dir().join("bases");
    let stem = format!("{profile}-{}-{}-{}", spec.suite, arch.debian(), &key[..16]);
    let e = CacheEntry {
        tarball: dir.join(format!("{stem}.tar.zst")),
        list: dir.join(format!("{stem}.packages")),
        meta: dir.join(format!("{stem}.meta.json")),
        lock: dir.join(format!("{stem}.lock")),
        key,
    };
    Ok((e, r, sources))
}

/// Returns the base for `arch`, building it with mmdebstrap when not cached.
pub fn ensure(spec: &BaseSpec, arch: Arch, profile: &str, refresh: bool) -> Result<CachedBase> {
    let (e, r, sources) = lookup(spec, arch, profile)?;
    let dir = cache_dir().join("bases");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock =
        crate::sys::lock(&e.lock).with_context(|| format!("locking {}", e.lock.display()))?;
    let CacheEntry {
        key,
        tarball,
        list,
        meta,
        ..
    } = e;
    let mut cold = false;
    if refresh || !tarball.is_file() || !list.is_file() {
        cold = true;
        let load_start = load1();
        let t = std::time::Instant::now();
        build(spec, arch, &r, &sources, &tarball, &list)?;
        let m = BaseMeta {
            seconds: t.elapsed().as_secs_f64(),
            date: utc_rfc3339(std::time::SystemTime::now()),
            load_start,
            load_end: load1(),
            arch: arch.debian().to_string(),
        };
        // Timing is informational: a failure to record it fails nothing.
        if let Err(err) = write_meta(&meta, &m) {
            tracing::warn!("could not record the base build time: {err:#}");
        }
    } else {
        tracing::info!("using cached base {}", tarball.display());
    }
    let text =
        std::fs::read_to_string(&list).with_context(|| format!("reading {}", list.display()))?;
    let packages = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(p, v)| (p.to_string(), v.to_string()))
        .collect();
    Ok(CachedBase {
        tarball,
        packages,
        key,
        cold,
    })
}

/// How long a cached base took to build (`<stem>.meta.json`, beside it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BaseMeta {
    /// mmdebstrap plus compression, in seconds.
    pub seconds: f64,
    /// When the build finished, UTC (RFC 3339).
    pub date: String,
    /// 1-minute load average at the start and the end of the build.
    pub load_start: Option<f64>,
    pub load_end: Option<f64>,
    pub arch: String,
}

pub fn write_meta(path: &Path, m: &BaseMeta) -> Result<()> {
    let text = serde_json::to_string_pretty(m).context("encoding the base timing")?;
    crate::io::write_atomic(path, (text + "\n").as_bytes())
}

/// `Ok(None)` when there is no meta file (a base cached before timing was
/// recorded).
pub fn read_meta(path: &Path) -> Result<Option<BaseMeta>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("parsing {}", path.display()))
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub use crate::io::utc_rfc3339;

/// Copies the keyrings (as read and checked) to a directory apt can read
/// during the build: apt resolves `signed-by` paths on the host, not in the
/// chroot. The image gets them under `/etc/apt/keyrings/`.
fn stage_keyrings(sources: &[ResolvedSource]) -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("hc-keyrings-")
        .tempdir()
        .context("creating a directory for the apt keyrings")?;
    let p = dir.path().to_string_lossy().to_string();
    // It goes into mmdebstrap hooks and a sed expression.
    if p.is_empty()
        || !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    {
        bail!("the temporary directory {p:?} has characters the build cannot quote; set TMPDIR to a plain path such as /tmp");
    }
    // apt may verify as the unprivileged _apt user.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {p}"))?;
    for s in sources {
        let f = dir.path().join(&s.keyring_name);
        std::fs::write(&f, &s.keyring).with_context(|| format!("writing {}", f.display()))?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting the mode of {}", f.display()))?;
    }
    Ok(dir)
}

/// The mmdebstrap arguments for the extra sources, their keyrings staged in
/// `staged`: one `deb [signed-by=...]` mirror argument each (host path, for
/// the build), then customize hooks that copy the keyrings to
/// `/etc/apt/keyrings/` and point the image's sources.list at them.
pub fn source_args(sources: &[ResolvedSource], staged: &str) -> (Vec<String>, Vec<String>) {
    let mirrors = sources
        .iter()
        .map(|s| s.source.one_line(&format!("{staged}/{}", s.keyring_name)))
        .collect();
    if sources.is_empty() {
        return (mirrors, Vec::new());
    }
    let mut names: Vec<String> = sources
        .iter()
        .map(|s| format!("{staged}/{}", s.keyring_name))
        .collect();
    names.sort();
    names.dedup();
    let list = "\"$1/etc/apt/sources.list\"";
    let hooks = vec![
        format!("--customize-hook=mkdir -p \"$1{KEYRINGS_DIR}\""),
        format!("--customize-hook=copy-in {} {KEYRINGS_DIR}", names.join(" ")),
        format!(
            "--customize-hook=sed -i 's|\"{}/|\"{KEYRINGS_DIR}/|g' {list} && ! grep -qF '{staged}' {list}",
            staged.replace('.', "\\.")
        ),
    ];
    (mirrors, hooks)
}

fn build(
    spec: &BaseSpec,
    arch: Arch,
    recipe: &serde_json::Value,
    sources: &[ResolvedSource],
    tarball: &Path,
    list: &Path,
) -> Result<()> {
    if which("mmdebstrap").is_none() {
        bail!("mmdebstrap is missing; install it with: apt-get install mmdebstrap (or run .ci/install-deps)");
    }
    if !binfmt_ready(arch) {
        bail!(
            "no qemu-user binfmt handler for {}: install it with: apt-get install qemu-user-static binfmt-support && mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable (or run .ci/install-deps)",
            arch.debian()
        );
    }
    let partial = crate::io::partial(tarball);
    let partial_tar = tarball.with_extension("partial.tar");
    let list_partial = crate::io::partial(list);
    let pkgs: Vec<String> = recipe["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let staged = if sources.is_empty() {
        None
    } else {
        Some(stage_keyrings(sources)?)
    };
    let (mirrors, source_hooks) = match &staged {
        Some(d) => source_args(sources, &d.path().to_string_lossy()),
        None => (Vec::new(), Vec::new()),
    };
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(format!("--variant={}", spec.variant))
        .arg(format!("--architectures={}", arch.debian()))
        .arg(format!("--components={}", spec.components.join(",")))
        .arg("--format=tar")
        .arg("--skip=cleanup/apt/lists")
        .arg("--aptopt=Acquire::Retries \"3\"")
        .arg(format!("--essential-hook={ESSENTIAL_HOOK}"))
        .arg(format!("--customize-hook={CUSTOMIZE_INITRAMFS}"))
        .arg(format!("--customize-hook={CUSTOMIZE_PYCOMPILE}"))
        .arg(format!("--customize-hook={CUSTOMIZE_SYSTEM}"))
        .args(&source_hooks)
        .arg(format!(
            "--customize-hook=dpkg-query --admindir=\"$1/var/lib/dpkg\" -W -f='${{Package}}\\t${{Version}}\\n' > {}",
            list_partial.display()
        ))
        // The device regenerates these; they only make images differ.
        .arg("--customize-hook=rm -f \"$1\"/var/cache/ldconfig/aux-cache \"$1\"/var/log/*.log \"$1\"/var/log/apt/*")
        .arg("--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/*");
    for p in &spec.exclude {
        cmd.arg(format!("--dpkgopt=path-exclude={p}"));
    }
    if !pkgs.is_empty() {
        cmd.arg(format!("--include={}", pkgs.join(",")));
    }
    cmd.arg(&spec.suite)
        .arg(&partial_tar)
        .arg(&spec.mirror)
        .args(&mirrors);
    let t = std::time::Instant::now();
    tracing::info!(
        "building the {} base with mmdebstrap ({} packages; arm64 runs under emulation, expect minutes)",
        arch.debian(),
        pkgs.len()
    );
    let st = cmd
        .env("SOURCE_DATE_EPOCH", "1735689600")
        .status()
        .context("starting mmdebstrap")?;
    if !st.success() {
        let _ = std::fs::remove_file(&partial_tar);
        bail!("{} failed ({st})", exec::describe(&cmd));
    }
    // Compress ourselves: multithreaded, and mmdebstrap's own zstd is single-threaded.
    {
        let src = std::fs::File::open(&partial_tar)
            .with_context(|| format!("opening {}", partial_tar.display()))?;
        let dst = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut enc = zstd::stream::write::Encoder::new(dst, 3).context("starting zstd")?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        enc.multithread(workers).context("zstd workers")?;
        std::io::copy(&mut std::io::BufReader::new(src), &mut enc)
            .context("compressing the base")?;
        enc.finish()
            .context("finishing the base")?
            .sync_all()
            .context("syncing the base")?;
    }
    std::fs::remove_file(&partial_tar)
        .with_context(|| format!("removing {}", partial_tar.display()))?;
    std::fs::rename(&list_partial, list).with_context(|| format!("renaming {}", list.display()))?;
    std::fs::rename(&partial, tarball)
        .with_context(|| format!("renaming {}", tarball.display()))?;
    tracing::info!("base built in {:.0}s", t.elapsed().as_secs_f64());
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BaseSpec {
        toml::from_str(
            "suite = \"trixie\"\npackages = [\"systemd\", \"udev\"]\n[arch.arm64]\npackages = [\"linux-image-arm64\"]\n",
        )
        .expect("spec")
    }

    #[test]
    fn key_follows_inputs_not_order() {
        let a = spec();
        let mut b = spec();
        b.packages.reverse();
        assert_eq!(
            cache_key(&recipe(&a, Arch::Arm64)),
            cache_key(&recipe(&b, Arch::Arm64))
        );
        assert_ne!(
            cache_key(&recipe(&a, Arch::Arm64)),
            cache_key(&recipe(&a, Arch::Amd64))
        );
        b.packages.push("chrony".into());
        assert_ne!(
            cache_key(&recipe(&a, Arch::Arm64)),
            cache_key(&recipe(&b, Arch::Arm64))
        );
        let r = recipe(&a, Arch::Arm64);
        assert_eq!(r["packages"][0], "linux-image-arm64");
        // No extra sources: no "sources" key, so existing cache keys stay.
        assert!(r.get("sources").is_none(), "{r}");
    }

    /// A base with one extra source whose keyring holds `key`.
    fn with_source(dir: &Path, key: &[u8]) -> BaseSpec {
        std::fs::write(dir.join("repo.gpg"), key).expect("keyring");
        let mut s: BaseSpec = toml::from_str(
            "packages = [\"hello\"]\n[[sources]]\nuri = \"http://127.0.0.1:8080\"\nsuite = \"./\"\nkeyring = \"repo.gpg\"\n",
        )
        .expect("spec");
        s.origin = Some(dir.join("p.toml"));
        s
    }

    #[test]
    fn keyring_content_is_part_of_the_key() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = with_source(d.path(), &[0x99, 1, 2]);
        let ka = cache_key(&recipe(&a, Arch::Amd64));
        let b = with_source(d.path(), &[0x99, 1, 3]);
        let kb = cache_key(&recipe(&b, Arch::Amd64));
        assert_ne!(ka, kb);
        let r = recipe(&b, Arch::Amd64);
        assert_eq!(r["sources"][0]["keyring"], "repo.gpg");
        assert_eq!(
            r["sources"][0]["keyring_sha256"],
            crate::io::sha256_hex(&[0x99, 1, 3])
        );
        // lookup() agrees with recipe() and names the meta file.
        let (e, r2, resolved) = lookup(&b, Arch::Amd64, "p").expect("lookup");
        assert_eq!(r2, r);
        assert_eq!(e.key, kb);
        assert_eq!(resolved.len(), 1);
        assert!(e
            .meta
            .to_string_lossy()
            .ends_with(&format!("p-trixie-amd64-{}.meta.json", &kb[..16])));
        // A missing keyring is an input error from lookup, a null hash in recipe.
        std::fs::remove_file(d.path().join("repo.gpg")).expect("rm");
        let err = lookup(&b, Arch::Amd64, "p").expect_err("no keyring");
        assert!(
            err.chain().any(|c| c.is::<crate::error::InputError>()),
            "{err:#}"
        );
        assert!(recipe(&b, Arch::Amd64)["sources"][0]["keyring_sha256"].is_null());
    }

    #[test]
    fn sources_become_mirror_lines_and_hooks() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut spec = with_source(d.path(), &[0x99, 1, 2]);
        let mut second = spec.sources[0].clone();
        second.uri = "http://apt.armbian.com".into();
        second.suite = "trixie".into();
        second.components = vec!["main".into(), "trixie-utils".into()];
        second.architectures = vec!["arm64".into()];
        spec.sources.push(second);
        let resolved = spec.resolve_sources().expect("resolve");
        let (mirrors, hooks) = source_args(&resolved, "/tmp/hc-keyrings-X1.y");
        assert_eq!(
            mirrors,
            [
                "deb [signed-by=\"/tmp/hc-keyrings-X1.y/repo.gpg\"] http://127.0.0.1:8080 ./",
                "deb [arch=arm64 signed-by=\"/tmp/hc-keyrings-X1.y/repo.gpg\"] http://apt.armbian.com trixie main trixie-utils",
            ]
        );
        assert_eq!(
            hooks,
            [
                "--customize-hook=mkdir -p \"$1/etc/apt/keyrings\"",
                // One copy of a keyring shared by two sources.
                "--customize-hook=copy-in /tmp/hc-keyrings-X1.y/repo.gpg /etc/apt/keyrings",
                "--customize-hook=sed -i 's|\"/tmp/hc-keyrings-X1\\.y/|\"/etc/apt/keyrings/|g' \"$1/etc/apt/sources.list\" && ! grep -qF '/tmp/hc-keyrings-X1.y' \"$1/etc/apt/sources.list\"",
            ]
        );
        assert_eq!(source_args(&[], "/tmp/x"), (Vec::new(), Vec::new()));
    }

    #[test]
    fn meta_round_trips_and_is_optional() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("b.meta.json");
        assert_eq!(read_meta(&p).expect("missing is fine"), None);
        let m = BaseMeta {
            seconds: 963.25,
            date: utc_rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000),
            ),
            load_start: Some(1.5),
            load_end: None,
            arch: "arm64".into(),
        };
        write_meta(&p, &m).expect("write");
        assert_eq!(read_meta(&p).expect("read"), Some(m));
        assert!(!crate::io::partial(&p).exists());
        assert_eq!(std::fs::read_dir(d.path()).expect("ls").count(), 1);
        std::fs::write(&p, "{").expect("write");
        assert!(read_meta(&p).is_err());
    }

    #[test]
    fn dates_are_utc_rfc3339() {
        let at = |s: u64| utc_rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_735_689_599), "2024-12-31T23:59:59Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00Z");
    }
}
