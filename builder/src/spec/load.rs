// SPDX-License-Identifier: Apache-2.0
//! Reading a data file and the checks every kind shares.

use std::path::Path;

use crate::error::InputError;

/// The data files' format version.
pub const SCHEMA: u32 = 1;

pub fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|e| {
        InputError::new(
            path.display().to_string(),
            "(file)",
            format!("cannot read it: {e}"),
            "check the path",
        )
    })
}

pub fn check_schema(file: &str, schema: u32) -> Result<(), InputError> {
    if schema != SCHEMA {
        return Err(InputError::new(
            file,
            "schema",
            format!("unsupported schema {schema}"),
            "set `schema = 1`",
        ));
    }
    Ok(())
}

pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
