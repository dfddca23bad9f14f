// SPDX-License-Identifier: Apache-2.0
//! `hc-image` entry point: parse, dispatch, map errors to exit codes
//! (0 ok, 1 failure, 2 invalid input).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use hc_image::cli::{BenchMode, BoardsCmd, Cli, Cmd, ConfigCmd, DevCmd, ImagesCmd, QemuCmd};
use hc_image::{blobs, dev, error, inspect, pipeline, plan, spec};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .without_time()
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if is_input_error(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// True if any error in the chain is the user's to fix: exit code 2.
fn is_input_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<error::InputError>()
            || c.is::<hc_firstboot::config::ConfigError>()
            || c.is::<plan::PlanError>()
    })
}

fn run(cli: Cli) -> Result<()> {
    let dirs = spec::DataDirs::locate();
    match cli.cmd {
        None => {
            use clap::CommandFactory;
            Cli::command().print_help().context("printing help")?;
            Ok(())
        }
        Some(Cmd::Build(a)) => {
            let opts = pipeline::BuildOpts {
                board: a.board,
                config: a
                    .config
                    .unwrap_or_else(|| dirs.root.join("examples/homecloud.toml")),
                image: a.image,
                rootfs: a.rootfs,
                base: a.base,
                base_sha256: a.base_sha256,
                out: a.out,
                root_size: a.root_size,
                extra_overlays: a.extra_overlay,
                refresh_base: a.refresh_base,
                cluster_secret: a.cluster_secret,
            };
            let r = pipeline::build(&opts)?;
            for p in [&r.image, &r.zst, &r.bmap, &r.sums, &r.manifest] {
                println!("{}", p.display());
            }
            Ok(())
        }
        Some(Cmd::Inspect(a)) => {
            let r = inspect::inspect(&a.image)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                inspect::print(&r);
            }
            Ok(())
        }
        Some(Cmd::Boards(a)) => match a.cmd {
            None | Some(BoardsCmd::List) => {
                for name in dirs.board_names() {
                    let (b, _) = dirs.load_board(&name)?;
                    println!(
                        "{:<12} {:<6} {:<4} {:<9} {}",
                        b.name,
                        b.arch.debian(),
                        format!("{:?}", b.disk.table).to_ascii_lowercase(),
                        format!("{:?}", b.boot.method).to_ascii_lowercase(),
                        b.description
                    );
                }
                Ok(())
            }
            Some(BoardsCmd::Pin { board, dry_run }) => {
                let (_, path) = dirs.load_board(&board)?;
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let (new, changes) = blobs::repin(&text, &path.display().to_string())?;
                for c in &changes {
                    println!("{c}");
                }
                if !dry_run && new != text {
                    std::fs::write(&path, new)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("updated {}", path.display());
                }
                Ok(())
            }
        },
        Some(Cmd::Images(a)) => images(&dirs, a.cmd),
        Some(Cmd::Config(ConfigCmd::Check { file })) => {
            let c = hc_firstboot::config::HomecloudConfig::load(&file)?;
            println!(
                "{}: ok (cluster {}, {} node(s) listed, {} service(s))",
                file.display(),
                c.cluster.name,
                c.nodes.len(),
                c.services.values().filter(|s| s.enabled).count()
            );
            Ok(())
        }
        Some(Cmd::Config(ConfigCmd::Schema)) => {
            let s = schemars::schema_for!(hc_firstboot::config::HomecloudConfig);
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        Some(Cmd::Flash(a)) => hc_image::flash::cli::run(a, cli.quiet),
        // Flash's benchmark lives with flash (it uses dev::bench's tree).
        Some(Cmd::Bench(a)) => match &a.mode {
            Some(BenchMode::Flash(f)) => hc_image::dev::flash_bench::run(f),
            Some(BenchMode::Images(i)) => hc_image::dev::images_bench::run(i),
            _ => dev::bench::run(&a),
        },
        Some(Cmd::Qemu(QemuCmd::Run {
            image,
            board,
            disk_size,
            memory,
            mac,
            data_disk,
        })) => {
            let board = match board {
                Some(b) => b,
                None => {
                    let m = image.parent().map(|d| d.join("manifest.json"));
                    let v: serde_json::Value = m
                        .and_then(|m| std::fs::read(m).ok())
                        .and_then(|t| serde_json::from_slice(&t).ok())
                        .unwrap_or_default();
                    v["board"]["name"]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| {
                            error::InputError::new(
                                image.display().to_string(),
                                "--board",
                                "no manifest.json beside the image names its board",
                                "pass --board qemu-arm64 or --board amd64",
                            )
                        })?
                }
            };
            let work = tempfile::tempdir().context("creating a work directory")?;
            let opts = hc_qemu::GuestOpts {
                machine: hc_qemu::Machine::for_board(&board).map_err(|e| {
                    error::InputError::new(
                        "command line",
                        "--board",
                        format!("{e:#}"),
                        "use qemu-arm64 or amd64",
                    )
                })?,
                image: image.clone(),
                workdir: work.path().to_path_buf(),
                disk_size: disk_size.bytes(),
                memory_mib: memory,
                cpus: 2,
                mac,
                reuse_disk: false,
                net: hc_qemu::Net::User,
                data_disk: data_disk.map(|s| s.bytes()),
            };
            let disk = work.path().join("disk.img");
            hc_qemu::sparse_copy(&image, &disk, disk_size.bytes())?;
            hc_qemu::Guest::ensure_data_disk(&opts)?;
            let st = hc_qemu::Guest::command(&opts, &disk)?
                .args(["-serial", "mon:stdio"])
                .status()
                .context("starting QEMU")?;
            anyhow::ensure!(st.success(), "QEMU exited with {st}");
            Ok(())
        }
        Some(Cmd::Dev(DevCmd::Agent { arch })) => {
            let a = match arch.as_str() {
                "arm64" => spec::Arch::Arm64,
                "amd64" => spec::Arch::Amd64,
                other => anyhow::bail!("unknown architecture {other}: use arm64 or amd64"),
            };
            println!(
                "{}",
                hc_image::agent::ensure(&hc_image::agent::source_root(), a)?.display()
            );
            Ok(())
        }
        Some(Cmd::Dev(DevCmd::Schema)) => {
            let s = serde_json::json!({
                "board": schemars::schema_for!(spec::BoardSpec),
                "image": schemars::schema_for!(spec::ImageProfile),
            });
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        Some(Cmd::Dev(DevCmd::Plan { board, root_size })) => {
            let (b, _) = dirs.load_board(&board)?;
            let l = plan::plan(
                &b,
                &format!("boards/{board}.toml"),
                root_size.bytes(),
                plan::stable_ids(board.as_bytes()),
            )?;
            println!("{}", serde_json::to_string_pretty(&l)?);
            Ok(())
        }
    }
}

fn images(dirs: &spec::DataDirs, cmd: Option<ImagesCmd>) -> Result<()> {
    use hc_image::oci;
    let all = |names: Vec<String>| {
        if names.is_empty() {
            oci::recipe::names(&dirs.root)
        } else {
            names
        }
    };
    match cmd {
        None | Some(ImagesCmd::List) => {
            for name in oci::recipe::names(&dirs.root) {
                let (r, _) = oci::recipe::load(&dirs.root, &name)?;
                let pinned: Vec<String> = oci::ARCHES
                    .iter()
                    .map(|a| format!("{} {}", a.debian(), r.pinned(*a)))
                    .collect();
                println!(
                    "{:<12} {:<40} pins: {}  {}",
                    name,
                    oci::reference(&name, &r, spec::Arch::Arm64),
                    pinned.join(", "),
                    r.description
                );
            }
            Ok(())
        }
        Some(ImagesCmd::Pin { names, dry_run }) => {
            for line in oci::pin(&dirs.root, &all(names), dry_run)? {
                println!("{line}");
            }
            Ok(())
        }
        Some(ImagesCmd::Build { names, arch, out }) => {
            let arches = if arch.is_empty() {
                oci::ARCHES.to_vec()
            } else {
                arch.iter()
                    .map(|a| match a.as_str() {
                        "arm64" => Ok(spec::Arch::Arm64),
                        "amd64" => Ok(spec::Arch::Amd64),
                        other => Err(error::InputError::new(
                            "command line",
                            "--arch",
                            format!("unknown architecture {other}"),
                            "use arm64 or amd64",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            };
            let names = all(names);
            for a in arches {
                for b in oci::build(&dirs.root, &names, a, &out)? {
                    let bytes: usize = b.layers.iter().map(|l| l.size).sum();
                    println!(
                        "{} {} {} ({} layers, {:.1} MiB compressed)",
                        b.reference,
                        b.arch,
                        b.manifest,
                        b.layers.len(),
                        bytes as f64 / 1048576.0
                    );
                }
                println!("{}", out.join(format!("oci-{}", a.debian())).display());
            }
            Ok(())
        }
    }
}
