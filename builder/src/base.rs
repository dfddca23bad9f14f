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
use crate::spec::{Arch, BaseSpec};

/// Bumped when the hooks below change, so old caches are not reused.
const RECIPE_VERSION: u32 = 2;

/// Emulated dpkg is the slow part: regenerate the initramfs once at the end
/// instead of once per trigger, and leave byte-compiling Python (Ceph's mgr
/// modules) to the device (`hc-pycompile.service`), where it runs natively.
const ESSENTIAL_HOOK: &str = "for f in /usr/sbin/update-initramfs /usr/bin/py3compile; do chroot \"$1\" dpkg-divert --quiet --local --rename --add $f && ln -s /bin/true \"$1$f\"; done";
const CUSTOMIZE_INITRAMFS: &str = "for f in /usr/sbin/update-initramfs /usr/bin/py3compile; do rm \"$1$f\" && chroot \"$1\" dpkg-divert --quiet --local --rename --remove $f; done && if ls \"$1\"/boot/vmlinuz-* >/dev/null 2>&1; then chroot \"$1\" update-initramfs -c -k all; fi";

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

/// What the base depends on, hashed into the cache key.
pub fn recipe(spec: &BaseSpec, arch: Arch) -> serde_json::Value {
    let mut pkgs = spec.packages.clone();
    if let Some(extra) = spec.arch.get(arch.debian()) {
        pkgs.extend(extra.packages.iter().cloned());
    }
    pkgs.sort();
    pkgs.dedup();
    json!({
        "recipe": RECIPE_VERSION,
        "suite": spec.suite,
        "mirror": spec.mirror,
        "components": spec.components,
        "variant": spec.variant,
        "arch": arch.debian(),
        "packages": pkgs,
        "exclude": spec.exclude,
        "hooks": [ESSENTIAL_HOOK, CUSTOMIZE_INITRAMFS, CUSTOMIZE_SYSTEM],
    })
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

/// Returns the base for `arch`, building it with mmdebstrap when not cached.
pub fn ensure(spec: &BaseSpec, arch: Arch, profile: &str, refresh: bool) -> Result<CachedBase> {
    let r = recipe(spec, arch);
    let key = cache_key(&r);
    let dir = cache_dir().join("bases");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = format!("{profile}-{}-{}-{}", spec.suite, arch.debian(), &key[..16]);
    let tarball = dir.join(format!("{stem}.tar.zst"));
    let list = dir.join(format!("{stem}.packages"));
    let _lock = crate::sys::lock(&dir.join(format!("{stem}.lock")))
        .with_context(|| format!("locking {}", dir.display()))?;
    let mut cold = false;
    if refresh || !tarball.is_file() || !list.is_file() {
        cold = true;
        build(spec, arch, &r, &tarball, &list)?;
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

fn build(
    spec: &BaseSpec,
    arch: Arch,
    recipe: &serde_json::Value,
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
    let partial = crate::build::partial(tarball);
    let partial_tar = tarball.with_extension("partial.tar");
    let list_partial = crate::build::partial(list);
    let pkgs: Vec<String> = recipe["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(format!("--variant={}", spec.variant))
        .arg(format!("--architectures={}", arch.debian()))
        .arg(format!("--components={}", spec.components.join(",")))
        .arg("--format=tar")
        .arg("--skip=cleanup/apt/lists")
        .arg("--aptopt=Acquire::Retries \"3\"")
        .arg(format!("--essential-hook={ESSENTIAL_HOOK}"))
        .arg(format!("--customize-hook={CUSTOMIZE_INITRAMFS}"))
        .arg(format!("--customize-hook={CUSTOMIZE_SYSTEM}"))
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
    cmd.arg(&spec.suite).arg(&partial_tar).arg(&spec.mirror);
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
    }
}
