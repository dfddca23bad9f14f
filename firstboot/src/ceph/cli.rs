// SPDX-License-Identifier: Apache-2.0
//! `hc ceph WORDS [KEY=VALUE...]`: native monitor commands from a shell.

use serde_json::{json, Value};

use crate::engine::Result;

/// `hc ceph WORDS... [KEY=VALUE...]`: the monitor command `WORDS` with
/// those arguments, as JSON (numbers and true/false typed), JSON output.
/// Native and quick where the Python `ceph` CLI takes seconds.
pub fn command_line(args: &[String]) -> Result<Value> {
    let mut prefix = Vec::new();
    let mut cmd = json!({"format": "json"});
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => {
                cmd[k] = if let Ok(n) = v.parse::<i64>() {
                    n.into()
                } else if let Ok(b) = v.parse::<bool>() {
                    b.into()
                } else {
                    v.into()
                }
            }
            None if cmd.as_object().is_some_and(|o| o.len() > 1) => {
                return Err(format!(
                    "`{a}`: command words go before KEY=VALUE arguments"
                ))
            }
            None => prefix.push(a.as_str()),
        }
    }
    if prefix.is_empty() {
        return Err("no command: e.g. `hc ceph status` or `hc ceph osd dump`".into());
    }
    cmd["prefix"] = prefix.join(" ").into();
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_become_monitor_commands() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&a(&[
                "osd",
                "pool",
                "get",
                "pool=homecloud_data",
                "var=size"
            ])),
            Ok(
                json!({"prefix": "osd pool get", "pool": "homecloud_data", "var": "size", "format": "json"})
            )
        );
        assert_eq!(
            command_line(&a(&["osd", "purge", "id=3", "yes_i_really_mean_it=true"])),
            Ok(
                json!({"prefix": "osd purge", "id": 3, "yes_i_really_mean_it": true, "format": "json"})
            )
        );
        assert!(command_line(&[]).is_err());
        assert!(command_line(&a(&["osd", "id=1", "dump"])).is_err());
    }
}
