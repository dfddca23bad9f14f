// SPDX-License-Identifier: Apache-2.0
//! Bootloader blobs from pinned Debian packages (build host).
//!
//! The .deb is fetched from the mirror, checked against its pinned sha256,
//! cached, and the blob is extracted in-process (ar + tar), so no dpkg and no
//! root are needed. The mirror keeps only current versions: when a pin has
//! gone, the error names the version now available and `hc-image boards pin`
//! updates the board file.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::error::InputError;
use crate::io::sha256_hex;
use crate::spec::{BlobSpec, DEFAULT_MIRROR};

pub fn mirror() -> String {
    std::env::var("HC_DEBIAN_MIRROR")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// `HC_CACHE_DIR`, else `$XDG_CACHE_HOME/hc-image`, else `~/.cache/hc-image`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HC_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("hc-image");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/hc-image")
}

/// Debian pool path of a binary package.
pub fn pool_path(source: &str, package: &str, version: &str, arch: &str) -> String {
    let prefix = if source.starts_with("lib") && source.len() > 3 {
        &source[..4]
    } else {
        &source[..1.min(source.len())]
    };
    // Epochs are not part of pool file names.
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    format!("pool/main/{prefix}/{source}/{package}_{v}_{arch}.deb")
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(20))
        .timeout_read(Duration::from_secs(120))
        .build()
}

pub(crate) enum Fetched {
    Body(Vec<u8>),
    NotFound,
}

pub(crate) fn http_get(url: &str) -> Result<Fetched> {
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(2 << attempt));
        }
        match agent().get(url).call() {
            Ok(resp) => {
                let mut body = Vec::new();
                resp.into_reader()
                    .take(512 << 20)
                    .read_to_end(&mut body)
                    .with_context(|| format!("downloading {url}"))?;
                return Ok(Fetched::Body(body));
            }
            Err(ureq::Error::Status(404, _)) => return Ok(Fetched::NotFound),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow!(
        "downloading {url} failed after 3 attempts: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// A package's current entry in a suite's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub version: String,
    pub filename: String,
    pub sha256: String,
}

/// Looks `package` up in `dists/<suite>/main/binary-<arch>/Packages.xz`.
pub fn lookup_index(suite: &str, arch: &str, package: &str) -> Result<Option<IndexEntry>> {
    let url = format!("{}/dists/{suite}/main/binary-{arch}/Packages.xz", mirror());
    let Fetched::Body(xz) = http_get(&url)? else {
        bail!("{url} does not exist: check the suite name");
    };
    let mut text = String::new();
    liblzma::read::XzDecoder::new(&xz[..])
        .read_to_string(&mut text)
        .with_context(|| format!("decompressing {url}"))?;
    Ok(parse_index(&text, package))
}

pub fn parse_index(text: &str, package: &str) -> Option<IndexEntry> {
    for stanza in text.split("\n\n") {
        let field = |k: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(k)?
                    .strip_prefix(':')
                    .map(|v| v.trim().to_string())
            })
        };
        if field("Package").as_deref() == Some(package) {
            return Some(IndexEntry {
                version: field("Version")?,
                filename: field("Filename")?,
                sha256: field("SHA256")?,
            });
        }
    }
    None
}

/// Returns the pinned .deb, from the cache when its hash still matches.
pub fn fetch_deb(b: &BlobSpec, board_file: &str, index: usize) -> Result<Vec<u8>> {
    let cached = cache_dir().join("debs").join(format!(
        "{}_{}_{}.deb",
        b.package,
        b.version.replace(':', "%3a"),
        b.arch
    ));
    if let Ok(data) = std::fs::read(&cached) {
        if sha256_hex(&data) == b.deb_sha256 {
            return Ok(data);
        }
        tracing::warn!(
            "cached {} does not match its pinned sha256; fetching it again",
            cached.display()
        );
        std::fs::remove_file(&cached)
            .with_context(|| format!("removing stale {}", cached.display()))?;
    }
    let url = format!(
        "{}/{}",
        mirror(),
        pool_path(&b.source, &b.package, &b.version, &b.arch)
    );
    tracing::info!("fetching {url}");
    let data = match http_get(&url)? {
        Fetched::Body(d) => d,
        Fetched::NotFound => {
            let now = lookup_index(&b.suite, &b.arch, &b.package)?;
            let problem = match now {
                Some(e) => format!(
                    "{} {} is no longer on the mirror; {} now has {}",
                    b.package, b.version, b.suite, e.version
                ),
                None => format!(
                    "{} {} is no longer on the mirror and {} has no {} at all",
                    b.package, b.version, b.suite, b.package
                ),
            };
            return Err(InputError::new(
                board_file,
                format!("blobs[{index}].version"),
                problem,
                "run `hc-image boards pin BOARD` to pin the current version (it updates version, deb_sha256, sha256 and size)",
            )
            .into());
        }
    };
    let got = sha256_hex(&data);
    if got != b.deb_sha256 {
        return Err(InputError::new(
            board_file,
            format!("blobs[{index}].deb_sha256"),
            format!(
                "{url} has sha256 {got}, the pin says {}; the download was fetched again and still differs",
                b.deb_sha256
            ),
            "check the mirror (HC_DEBIAN_MIRROR); if the package was rebuilt, re-pin with `hc-image boards pin BOARD`",
        )
        .into());
    }
    let dir = cached.parent().context("cache path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::io::write_atomic(&cached, &data)?;
    Ok(data)
}

/// Fetches the .deb and returns the blob, checked against its pinned hash and size.
pub fn fetch_blob(b: &BlobSpec, board_file: &str, index: usize) -> Result<Vec<u8>> {
    let deb = fetch_deb(b, board_file, index)?;
    let blob = extract_from_deb(&deb, &b.path)
        .with_context(|| format!("extracting {} from {} {}", b.path, b.package, b.version))?;
    let got = sha256_hex(&blob);
    if got != b.sha256 || blob.len() as u64 != b.size {
        return Err(InputError::new(
            board_file,
            format!("blobs[{index}].sha256"),
            format!(
                "{} in {} {} has sha256 {got} and {} bytes; the pin says {} and {} bytes",
                b.path,
                b.package,
                b.version,
                blob.len(),
                b.sha256,
                b.size
            ),
            "re-pin with `hc-image boards pin BOARD`",
        )
        .into());
    }
    Ok(blob)
}

/// The `data.tar.*` member of a .deb (an `ar` archive), decompressed.
pub fn data_tar(deb: &[u8]) -> Result<Box<dyn Read + '_>> {
    if !deb.starts_with(b"!<arch>\n") {
        bail!("not a Debian package (no ar header)");
    }
    let mut pos = 8;
    while pos + 60 <= deb.len() {
        let hdr = &deb[pos..pos + 60];
        let name = String::from_utf8_lossy(&hdr[..16])
            .trim()
            .trim_end_matches('/')
            .to_string();
        let size: usize = String::from_utf8_lossy(&hdr[48..58])
            .trim()
            .parse()
            .context("reading ar member size")?;
        let start = pos + 60;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= deb.len())
            .context("truncated ar member")?;
        let body = &deb[start..end];
        if let Some(kind) = name.strip_prefix("data.tar") {
            return Ok(match kind {
                ".xz" => Box::new(liblzma::read::XzDecoder::new(body)),
                ".zst" => {
                    Box::new(zstd::stream::read::Decoder::new(body).context("starting zstd")?)
                }
                "" => Box::new(body),
                other => bail!("unsupported compression data.tar{other}"),
            });
        }
        pos = end + (end & 1);
    }
    bail!("no data.tar member in the package")
}

/// Reads one file out of a .deb.
pub fn extract_from_deb(deb: &[u8], path: &str) -> Result<Vec<u8>> {
    let mut ar = tar::Archive::new(data_tar(deb)?);
    let want = path.trim_start_matches("./");
    for e in ar.entries().context("reading data.tar")? {
        let mut e = e.context("reading data.tar entry")?;
        let p = e
            .path()
            .context("reading entry path")?
            .to_string_lossy()
            .into_owned();
        if p.trim_start_matches("./") == want {
            let mut out = Vec::new();
            e.read_to_end(&mut out).context("reading blob")?;
            return Ok(out);
        }
    }
    bail!("{path} is not in the package")
}

/// Re-pins every blob of a board file to the suite's current package:
/// returns the updated TOML text and a line per change.
pub fn repin(text: &str, file: &str) -> Result<(String, Vec<String>)> {
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("parsing {file}"))?;
    let mut changes = Vec::new();
    let Some(blobs) = doc
        .get_mut("blobs")
        .and_then(|b| b.as_array_of_tables_mut())
    else {
        return Ok((text.to_string(), changes));
    };
    for (i, t) in blobs.iter_mut().enumerate() {
        let get = |k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let (Some(package), Some(arch), Some(suite), Some(path)) =
            (get("package"), get("arch"), get("suite"), get("path"))
        else {
            bail!("{file}: blobs[{i}] lacks package, arch, suite or path");
        };
        let entry = lookup_index(&suite, &arch, &package)?
            .with_context(|| format!("{suite} has no package {package} for {arch}"))?;
        let url = format!("{}/{}", mirror(), entry.filename);
        let Fetched::Body(deb) = http_get(&url)? else {
            bail!("{url} is listed in the index but missing");
        };
        if sha256_hex(&deb) != entry.sha256 {
            bail!("{url} does not match the index's sha256");
        }
        let blob = extract_from_deb(&deb, &path)?;
        let old = get("version").unwrap_or_default();
        t["version"] = toml_edit::value(entry.version.clone());
        t["deb_sha256"] = toml_edit::value(entry.sha256.clone());
        t["sha256"] = toml_edit::value(sha256_hex(&blob));
        t["size"] = toml_edit::value(blob.len() as i64);
        changes.push(format!("blobs[{i}] {package}: {old} -> {}", entry.version));
    }
    Ok((doc.to_string(), changes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn pool_paths() {
        assert_eq!(
            pool_path("u-boot", "u-boot-rockchip", "2025.01-3+deb13u1", "arm64"),
            "pool/main/u/u-boot/u-boot-rockchip_2025.01-3+deb13u1_arm64.deb"
        );
        assert_eq!(
            pool_path("libfoo", "libfoo1", "1:2.0-1", "amd64"),
            "pool/main/libf/libfoo/libfoo1_2.0-1_amd64.deb"
        );
    }

    #[test]
    fn index_lookup_finds_the_stanza() {
        let idx = "Package: a\nVersion: 1\nFilename: pool/a.deb\nSHA256: 00\n\nPackage: u-boot-sunxi\nSource: u-boot\nVersion: 2025.01-4\nFilename: pool/main/u/u-boot/x.deb\nSHA256: ab\n";
        let e = parse_index(idx, "u-boot-sunxi").expect("found");
        assert_eq!(e.version, "2025.01-4");
        assert_eq!(e.sha256, "ab");
        assert!(parse_index(idx, "u-boot").is_none());
    }

    /// Builds a .deb in memory the way dpkg-deb lays it out.
    pub(crate) fn fake_deb(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tarball = tar::Builder::new(Vec::new());
        for (p, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            tarball
                .append_data(&mut h, format!("./{p}"), *data)
                .expect("append");
        }
        let tarball = tarball.into_inner().expect("tar");
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&tarball[..], 1)
            .read_to_end(&mut xz)
            .expect("xz");
        let mut deb = b"!<arch>\n".to_vec();
        for (name, body) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.xz", Vec::new()),
            ("data.tar.xz", xz),
        ] {
            deb.extend(
                format!(
                    "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    name,
                    0,
                    0,
                    0,
                    100644,
                    body.len()
                )
                .as_bytes(),
            );
            deb.extend(&body);
            if body.len() % 2 == 1 {
                deb.push(b'\n');
            }
        }
        deb
    }

    #[test]
    fn extracts_a_file_from_a_deb() {
        let deb = fake_deb(&[
            ("usr/lib/u-boot/x/u-boot.bin", b"BLOB"),
            ("usr/share/doc/y", b"odd"),
        ]);
        assert_eq!(
            extract_from_deb(&deb, "usr/lib/u-boot/x/u-boot.bin").expect("found"),
            b"BLOB"
        );
        assert!(extract_from_deb(&deb, "usr/lib/missing").is_err());
        assert!(extract_from_deb(b"garbage", "x").is_err());
        assert!(extract_from_deb(&deb[..deb.len() - 10], "usr/lib/u-boot/x/u-boot.bin").is_err());
    }
}
