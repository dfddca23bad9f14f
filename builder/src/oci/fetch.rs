// SPDX-License-Identifier: Apache-2.0
//! A pinned download: from the cache when its hash matches, else fetched,
//! checked against the pin and cached. The caller says how a missing or
//! changed file is reported, since only it knows the file and key.

use std::path::Path;

use anyhow::{Context, Result};

use crate::blobs::{http_get, Fetched};
use crate::error::InputError;
use crate::io::{sha256_hex, write_atomic};

pub fn verified(
    cached: &Path,
    url: &str,
    sha256: &str,
    gone: impl FnOnce() -> InputError,
    changed: impl FnOnce(&str) -> InputError,
) -> Result<Vec<u8>> {
    if let Ok(data) = std::fs::read(cached) {
        if sha256_hex(&data) == sha256 {
            return Ok(data);
        }
    }
    tracing::info!("fetching {url}");
    let data = match http_get(url)? {
        Fetched::Body(d) => d,
        Fetched::NotFound => return Err(gone().into()),
    };
    let got = sha256_hex(&data);
    if got != sha256 {
        return Err(changed(&got).into());
    }
    let dir = cached.parent().context("cache path")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(cached, &data)?;
    Ok(data)
}
