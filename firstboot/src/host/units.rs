// SPDX-License-Identifier: Apache-2.0
//! systemd units enabled and started without `systemctl enable`: enable
//! reloads systemd, and for a unit with an init script Debian's update-rc.d
//! reloads it twice more. Under emulation each reload took 12-19 s of the
//! guest's CPU (keepalived's enable alone 48 s). A wants link needs no
//! reload to count at the next boot, and `start` loads a unit by itself.

use std::path::Path;

use crate::exec::{Result, Runner};

/// Where packaged unit files live (merged /usr: /lib is the same place).
const UNIT_DIR: &str = "/usr/lib/systemd/system";

/// The unit file an instance (`ceph-mon@a.service`) or a plain unit comes from.
fn fragment(unit: &str) -> String {
    match (unit.find('@'), unit.rfind('.')) {
        (Some(at), Some(dot)) if at < dot => format!("{}{}", &unit[..=at], &unit[dot..]),
        _ => unit.to_string(),
    }
}

/// Makes `target` want `unit` from the next boot on: the link
/// `/etc/systemd/system/TARGET.wants/UNIT`, made atomically and synced.
/// `unit` carries its suffix (`keepalived.service`).
pub fn want(root: &Path, target: &str, unit: &str) -> Result<()> {
    let dir = root.join(format!("etc/systemd/system/{target}.wants"));
    let link = dir.join(unit);
    let to = format!("{UNIT_DIR}/{}", fragment(unit));
    if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(&to)) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{unit}.hc-tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&to, &tmp)
        .and_then(|_| std::fs::rename(&tmp, &link))
        .and_then(|_| std::fs::File::open(&dir)?.sync_all())
        .map_err(|e| format!("linking {} to {to}: {e}", link.display()))
}

/// `want`, then starts `unit` now (a failed earlier start is forgotten first,
/// so systemd's start limit does not refuse it).
pub fn want_and_start(root: &Path, runner: &dyn Runner, target: &str, unit: &str) -> Result<()> {
    want(root, target, unit)?;
    let _ = runner.run(&["systemctl", "reset-failed", unit]);
    runner.run(&["systemctl", "start", unit]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_link_to_their_template() {
        assert_eq!(fragment("ceph-mon@node1.service"), "ceph-mon@.service");
        assert_eq!(fragment("ceph-osd@12.service"), "ceph-osd@.service");
        assert_eq!(fragment("keepalived.service"), "keepalived.service");
    }

    #[test]
    fn want_links_once_and_replaces_a_wrong_link() {
        let root = tempfile::tempdir().expect("tempdir");
        want(root.path(), "ceph-mon.target", "ceph-mon@a.service").expect("want");
        let link = root
            .path()
            .join("etc/systemd/system/ceph-mon.target.wants/ceph-mon@a.service");
        assert_eq!(
            std::fs::read_link(&link).expect("link"),
            Path::new("/usr/lib/systemd/system/ceph-mon@.service")
        );
        std::fs::remove_file(&link).expect("rm");
        std::os::unix::fs::symlink("/dev/null", &link).expect("symlink");
        want(root.path(), "ceph-mon.target", "ceph-mon@a.service").expect("want again");
        assert_eq!(
            std::fs::read_link(&link).expect("link"),
            Path::new("/usr/lib/systemd/system/ceph-mon@.service")
        );
        let names: Vec<_> = std::fs::read_dir(link.parent().expect("dir"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary link left: {names:?}");
    }
}
