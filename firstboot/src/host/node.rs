// SPDX-License-Identifier: Apache-2.0
//! The node's running kernel: its name and its monotonic clock, and the
//! environment overrides tests use to shorten waits.

use std::path::Path;
use std::time::Duration;

/// System-wide monotonic milliseconds, comparable between processes.
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|s| s.parse::<f64>().ok())
        })
        .map_or(0, |s| (s * 1000.0) as u64)
}

/// The running kernel's hostname (not /etc/hostname: that is the next boot's).
pub fn current_hostname(root: &Path) -> String {
    std::fs::read_to_string(root.join("proc/sys/kernel/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `name` from the environment in seconds, else `default`.
pub fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}
