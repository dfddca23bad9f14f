// SPDX-License-Identifier: Apache-2.0
//! `hc-firstboot` (device): `run` converges this node (systemd runs it at
//! boot until the stamp exists); `status` prints what happened. Installed as
//! /usr/libexec/hc-firstboot; `hc status` calls it.

use std::path::PathBuf;
use std::process::ExitCode;

use hc_firstboot::agent::{self, RealRunner, Step};
use hc_firstboot::identity::Identity;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = std::env::var_os("HC_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    match args.first().map(String::as_str) {
        Some("run") => {
            let steps: [&dyn Step; 1] = [&Identity];
            match agent::run(&root, &RealRunner, &steps) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some("status") => {
            print!("{}", agent::status(&root));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: hc-firstboot run|status\n  run     converge this node (systemd runs it on first boot)\n  status  show the first-boot steps and what blocks them");
            ExitCode::from(2)
        }
    }
}
