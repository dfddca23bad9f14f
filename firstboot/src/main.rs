// SPDX-License-Identifier: Apache-2.0
//! `hc-firstboot` (device): `run` converges this node (systemd runs it at
//! boot until the stamp exists); `serve` announces the node and answers joins
//! for its lifetime; `status` prints what happened. Installed as
//! /usr/libexec/hc-firstboot; `hc status` calls it.

use std::path::PathBuf;
use std::process::ExitCode;

use hc_firstboot::agent::{self, RealRunner, Step};
use hc_firstboot::ceph::{self, Ceph};
use hc_firstboot::cluster::{self, Cluster, Keepalived, Network};
use hc_firstboot::identity::Identity;

static RUNNER: RealRunner = RealRunner;

fn main() -> ExitCode {
    let code = dispatch();
    hc_firstboot::rados::shutdown();
    code
}

fn dispatch() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = std::env::var_os("HC_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    match args.first().map(String::as_str) {
        Some("run") => {
            let all: [&dyn Step; 5] = [&Identity, &Network, &Cluster, &Keepalived, &Ceph];
            // HC_STEPS runs a subset: hc-identity.service runs `identity`
            // before dockerd starts; host engine tests run the cluster steps.
            let only = std::env::var("HC_STEPS").ok();
            let steps: Vec<&dyn Step> = all
                .into_iter()
                .filter(|s| {
                    only.as_deref()
                        .is_none_or(|o| o.split(',').any(|n| n == s.name()))
                })
                .collect();
            let complete = steps.len() == all.len();
            match agent::run_steps(&root, &RUNNER, &steps, complete) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some("serve") => match cluster::serve(&root, &RUNNER) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Some("status") => {
            print!("{}", agent::status(&root));
            print!("{}", cluster::status_lines(&root, &RUNNER));
            print!("{}", ceph::status(&root, &RUNNER));
            ExitCode::SUCCESS
        }
        Some("ceph") => match ceph::command_line(&args[1..]) {
            Ok(cmd) => {
                use hc_firstboot::agent::Runner;
                match RUNNER.mon_command(&root, &cmd.to_string(), b"") {
                    Ok(out) => {
                        println!("{}", String::from_utf8_lossy(&out).trim_end());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(1)
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("usage: hc-firstboot run|serve|status|ceph\n  run     converge this node (systemd runs it on first boot)\n  serve   announce this node and answer joins (hc-cluster.service)\n  status  show the first-boot steps, the cluster and what blocks them\n  ceph    a Ceph monitor command, JSON out (e.g. `ceph osd pool get pool=homecloud_data var=size`)");
            ExitCode::from(2)
        }
    }
}
