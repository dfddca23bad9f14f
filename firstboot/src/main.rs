// SPDX-License-Identifier: Apache-2.0
//! `hc-firstboot` (device): `run` converges this node (systemd runs it at
//! boot until the stamp exists); `serve` announces the node, answers joins
//! and runs the duties for its lifetime; `status` prints what happened.
//! Installed as /usr/libexec/hc-firstboot; `hc status` calls it.
//!
//! The three lists below are where a feature is registered.

use std::path::PathBuf;
use std::process::ExitCode;

use hc_firstboot::cluster::duty::Duty;
use hc_firstboot::cluster::join::JoinAnswer;
use hc_firstboot::engine::{self, Step};
use hc_firstboot::exec::{RealRunner, Runner};
use hc_firstboot::{ceph, cluster, identity, keepalived, registry, settings, timesync, tls};

static RUNNER: RealRunner = RealRunner;

/// The agent's steps, in the order they run.
static STEPS: &[&dyn Step] = &[
    &identity::Identity,
    &settings::Admin,
    &settings::Timezone,
    &settings::Address,
    &settings::WifiStep,
    &cluster::network::Network,
    &cluster::form::Cluster,
    &tls::Tls,
    &keepalived::Keepalived,
    &ceph::step::Ceph,
    &registry::step::Registry,
];

static VIP_HEALTH: keepalived::Health = keepalived::Health::new();
static SWARM: cluster::admit::SwarmAnswer = cluster::admit::SwarmAnswer::new();
static LABELS: cluster::managers::Labels = cluster::managers::Labels::new();
static MANAGERS: cluster::managers::Managers = cluster::managers::Managers::new();
static LEFTOVERS: cluster::managers::Leftovers = cluster::managers::Leftovers::new();

/// What `serve` does periodically (after-poll duties run in this order).
static DUTIES: &[&dyn Duty] = &[
    &VIP_HEALTH,
    &keepalived::Peers,
    &SWARM,
    &MANAGERS,
    &LABELS,
    &LEFTOVERS,
    &timesync::Server,
    &ceph::duty::Reconcile,
];

/// What the join channel hands out, by topic.
static JOIN_ANSWERS: &[&dyn JoinAnswer] = &[&SWARM, &ceph::duty::Answer, &tls::Answer];

fn main() -> ExitCode {
    let code = dispatch();
    hc_firstboot::rados::shutdown();
    code
}

fn fail(e: String, code: u8) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(code)
}

fn dispatch() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = std::env::var_os("HC_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    match args.first().map(String::as_str) {
        Some("run") => {
            // HC_STEPS runs a subset: hc-identity.service runs `identity`
            // before dockerd starts; host engine tests run the cluster steps.
            let only = std::env::var("HC_STEPS").ok();
            let steps: Vec<&dyn Step> = STEPS
                .iter()
                .copied()
                .filter(|s| {
                    only.as_deref()
                        .is_none_or(|o| o.split(',').any(|n| n == s.name()))
                })
                .collect();
            let complete = steps.len() == STEPS.len();
            match engine::run_steps(&root, &RUNNER, &steps, complete) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(e, 1),
            }
        }
        Some("serve") => match cluster::daemon::serve(&root, &RUNNER, DUTIES, JOIN_ANSWERS) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e, 1),
        },
        Some("status") => {
            print!("{}", engine::status(&root, &RUNNER, STEPS));
            ExitCode::SUCCESS
        }
        Some("clock-step") => {
            let (source, peers) = ceph::material::clock_peers(&root);
            match timesync::step_to_cluster(source, &peers) {
                Ok(s) => {
                    println!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e, 1),
            }
        }
        Some("ceph") => match ceph::cli::command_line(&args[1..]) {
            Ok(cmd) => match RUNNER.mon_command(&root, &cmd.to_string(), b"") {
                Ok(out) => {
                    println!("{}", String::from_utf8_lossy(&out).trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e, 1),
            },
            Err(e) => fail(e, 2),
        },
        _ => {
            eprintln!("usage: hc-firstboot run|serve|status|ceph|clock-step\n  run     converge this node (systemd runs it on first boot)\n  serve   announce this node and answer joins (hc-cluster.service)\n  status  show the first-boot steps, the cluster and what blocks them\n  ceph    a Ceph monitor command, JSON out (e.g. `ceph osd pool get pool=homecloud_data var=size`)\n  clock-step  step the clock to the cluster's before a monitor starts (ceph-mon's ExecStartPre)");
            ExitCode::from(2)
        }
    }
}
