// SPDX-License-Identifier: Apache-2.0
//! Failpoints that survive a reboot: a test arms one on the disk copy before
//! boot, and the agent exits right after the named side effect, as if the
//! power was cut there.

use std::path::{Path, PathBuf};

use super::journal::{ids, journal};

/// A one-shot failpoint armed by a test on the disk copy before boot.
pub const FAILPOINT_FILE: &str = "/etc/hc-image/failpoint";

/// Exits the process at a named point when `HC_FAILPOINT` or the
/// failpoint file names it, so tests can cut power exactly after a side
/// effect. Each name in the file (one per line) fires once: it moves to
/// `failpoint.fired`, so the next boot proceeds; production images have no
/// such file.
pub fn failpoint(name: &str) {
    let from_file = || {
        let root = std::env::var_os("HC_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from);
        consume_failpoint(&root.join(FAILPOINT_FILE.trim_start_matches('/')), name)
    };
    if std::env::var("HC_FAILPOINT").is_ok_and(|v| v == name) || from_file() {
        journal(
            ids::STEP_FAILED,
            3,
            &format!("failpoint {name}: exiting"),
            &[("HC_FAILPOINT", name)],
        );
        crate::rados::shutdown();
        std::process::exit(99);
    }
}

/// True (once) when a test armed `name` like [`failpoint`], which then
/// fails the operation it guards instead of exiting: an injected error,
/// journaled as such.
pub fn inject(name: &str) -> bool {
    let root = std::env::var_os("HC_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    let fire = std::env::var("HC_FAILPOINT").is_ok_and(|v| v == name)
        || consume_failpoint(&root.join(FAILPOINT_FILE.trim_start_matches('/')), name);
    if fire {
        journal(
            ids::STEP_FAILED,
            3,
            &format!("failpoint {name}: injecting a failure"),
            &[("HC_FAILPOINT", name)],
        );
    }
    fire
}

/// True (once) when the failpoint file `f` names `name`: the name moves to
/// `<f>.fired` and the file keeps the names not fired yet.
pub fn consume_failpoint(f: &Path, name: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(f) else {
        return false;
    };
    if !text.lines().any(|l| l.trim() == name) {
        return false;
    }
    let rest: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != name)
        .collect();
    let fired = f.with_extension("fired");
    let before = std::fs::read_to_string(&fired).unwrap_or_default();
    let recorded = std::fs::write(&fired, format!("{before}{name}\n")).is_ok();
    let consumed = if rest.is_empty() {
        std::fs::remove_file(f).is_ok()
    } else {
        std::fs::write(f, format!("{}\n", rest.join("\n"))).is_ok()
    };
    recorded && consumed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failpoint_in_the_file_fires_once_in_any_order() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("failpoint");
        std::fs::write(&f, "cluster:after-join\nceph:after-osd\n").expect("write");
        assert!(!consume_failpoint(&f, "identity:after-hostname"));
        assert!(consume_failpoint(&f, "ceph:after-osd"));
        assert!(!consume_failpoint(&f, "ceph:after-osd"), "fired twice");
        assert_eq!(
            std::fs::read_to_string(&f).expect("left"),
            "cluster:after-join\n"
        );
        assert!(consume_failpoint(&f, "cluster:after-join"));
        assert!(!f.exists(), "an empty failpoint file stays behind");
        let fired = std::fs::read_to_string(d.path().join("failpoint.fired")).expect("fired");
        assert_eq!(fired, "ceph:after-osd\ncluster:after-join\n");
    }
}
