// SPDX-License-Identifier: Apache-2.0
//! Errors the user fixes by changing input. `main` maps them to exit code 2.

use hc_firstboot::config::ConfigError;

/// Bad input: names the file, the key (or byte range) and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {problem} (fix: {fix})")]
pub struct InputError {
    pub file: String,
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl InputError {
    pub fn new(
        file: impl Into<String>,
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        InputError {
            file: file.into(),
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl From<ConfigError> for InputError {
    fn from(e: ConfigError) -> Self {
        InputError {
            file: e.file,
            key: e.key,
            problem: e.problem,
            fix: e.fix,
        }
    }
}

/// Parses a TOML file into `T`, reporting unknown keys and type errors with
/// their key path and line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T, InputError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = match e.path().to_string() {
            p if p == "." => "(file)".to_string(),
            p => p,
        };
        let msg = e
            .inner()
            .message()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let problem = match e.inner().span() {
            Some(span) => format!(
                "line {}: {msg}",
                text[..span.start.min(text.len())].matches('\n').count() + 1
            ),
            None => msg.clone(),
        };
        let fix = if msg.contains("unknown field") {
            "remove the key or correct its spelling; `hc-image dev schema` lists every key"
        } else if msg.contains("missing field") {
            "add the missing key"
        } else {
            "correct the value or the TOML syntax at that line"
        };
        InputError::new(file, key, problem, fix)
    })
}
