// SPDX-License-Identifier: Apache-2.0
//! One line for the person at the console while first boot works: shown
//! above every login prompt (agetty reads `/etc/issue.d/*.issue`, and the
//! image links `hc-progress.issue` there to the file below) and printed on
//! the console when it changes. Best effort: progress never fails a step.

use std::io::Write;
use std::path::Path;

use crate::host::files::{read_trimmed, write_atomic, PUBLIC};

/// In /run: a stale line never survives a reboot.
pub const FILE: &str = "/run/hc-firstboot/progress.issue";

/// Shows `line` unless it is already what the console shows.
pub fn show(root: &Path, line: &str) {
    let path = root.join(FILE.trim_start_matches('/'));
    // agetty expands backslash escapes in issue files.
    let line = line.replace('\\', "/");
    if read_trimmed(&path).as_deref() == Some(line.as_str()) {
        return;
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if write_atomic(&path, format!("{line}\n\n").as_bytes(), PUBLIC).is_err() {
        return;
    }
    if root != Path::new("/") {
        return;
    }
    if let Ok(mut c) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(c, "\r{line}");
    }
    // Prompts already shown are redrawn with the new line.
    let _ = std::process::Command::new("agetty")
        .arg("--reload")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_lands_in_the_issue_file_once() {
        let d = tempfile::tempdir().expect("tempdir");
        show(d.path(), r"hc-image first boot: step 5/7 cluster \l");
        let p = d.path().join(FILE.trim_start_matches('/'));
        let t = std::fs::read_to_string(&p).expect("written");
        assert_eq!(t, "hc-image first boot: step 5/7 cluster /l\n\n");
        let before = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .expect("mtime");
        std::thread::sleep(std::time::Duration::from_millis(20));
        show(d.path(), r"hc-image first boot: step 5/7 cluster \l");
        let after = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(before, after, "an unchanged line is not rewritten");
    }
}
