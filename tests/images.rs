// SPDX-License-Identifier: Apache-2.0
//! Service images (issue 14): every recipe under images/containers builds
//! from its pins for arm64 and amd64 on this host without emulation, the
//! same inputs give the same digests, and each image's program starts in a
//! container of a real dockerd (Debian's) and answers as its clients would
//! ask it. The arm64 images run under qemu-user (binfmt).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hc_tests::dockerd::Dockerd;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hc(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hc-image"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running hc-image")
}

fn recipes() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo().join("images/containers"))
        .expect("images/containers")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "toml")
                .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))?
        })
        .collect();
    v.sort();
    v
}

struct Built {
    _dir: tempfile::TempDir,
    out: PathBuf,
    secs: f64,
}

/// Every recipe, both architectures, built once for this test binary.
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("images");
        let t = Instant::now();
        let o = hc(
            &["images", "build", "--out", out.to_str().expect("utf-8")],
            &[],
        );
        assert!(
            o.status.success(),
            "images build: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Built {
            _dir: dir,
            out,
            secs: t.elapsed().as_secs_f64(),
        }
    })
}

fn summary(arch: &str) -> Vec<Value> {
    let b = built();
    let v: Value = serde_json::from_slice(
        &std::fs::read(b.out.join(format!("images-{arch}.json"))).expect("summary"),
    )
    .expect("json");
    v.as_array().expect("array").clone()
}

fn reference(arch: &str, name: &str) -> String {
    summary(arch)
        .iter()
        .find(|i| i["name"] == name)
        .and_then(|i| i["reference"].as_str())
        .unwrap_or_else(|| panic!("{name} not built for {arch}"))
        .to_string()
}

#[test]
fn every_recipe_builds_for_both_arches_with_an_sbom() {
    let b = built();
    println!(
        "BENCH images build (all recipes, both arches, warm deb cache or not): {:.1} s",
        b.secs
    );
    for arch in ["amd64", "arm64"] {
        let s = summary(arch);
        let names: Vec<String> = s
            .iter()
            .map(|i| i["name"].as_str().expect("name").to_string())
            .collect();
        assert_eq!(names, recipes(), "{arch}");
        let index: Value = serde_json::from_slice(
            &std::fs::read(b.out.join(format!("oci-{arch}/index.json"))).expect("index"),
        )
        .expect("json");
        let m = index["manifests"].as_array().expect("manifests");
        assert_eq!(m.len(), names.len());
        for (img, entry) in s.iter().zip(m) {
            assert_eq!(img["manifest"], entry["digest"], "{img}");
            assert_eq!(entry["platform"]["architecture"], arch);
            // The SBOM names every package with its .deb's sha256.
            let sbom: Value = serde_json::from_slice(
                &std::fs::read(b.out.join(img["sbom"].as_str().expect("sbom"))).expect("sbom file"),
            )
            .expect("sbom json");
            assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
            let pkgs = sbom["packages"].as_array().expect("packages");
            let n = |k: &str| img[k].as_u64().expect("count") as usize;
            assert_eq!(
                pkgs.len(),
                1 + n("packages") + n("wheels"),
                "the image, each .deb and each wheel: {}",
                img["name"]
            );
            // overlayfs stacks at most 128 layers.
            let layers = img["layers"].as_array().expect("layers").len();
            assert!(layers <= 100, "{}: {layers} layers", img["name"]);
            for p in &pkgs[1..] {
                let sum = p["checksums"][0]["checksumValue"].as_str().expect("sha256");
                assert_eq!(sum.len(), 64, "{p}");
            }
        }
        // Shared layers are stored once: libc6 is in every image.
        let blobs = std::fs::read_dir(b.out.join(format!("oci-{arch}/blobs/sha256")))
            .expect("blobs")
            .count();
        let referenced: usize = s
            .iter()
            .map(|i| i["layers"].as_array().expect("l").len() + 2)
            .sum();
        assert!(
            blobs < referenced,
            "{blobs} blobs for {referenced} references: nothing shared"
        );
    }
}

#[test]
fn same_pins_give_the_same_digests_from_an_empty_cache() {
    let b = built();
    let cache = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let o = hc(
        &[
            "images",
            "build",
            "restic",
            "--arch",
            "arm64",
            "--out",
            out.path().to_str().expect("utf-8"),
        ],
        &[("HC_CACHE_DIR", cache.path())],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again: Value = serde_json::from_slice(
        &std::fs::read(out.path().join("images-arm64.json")).expect("summary"),
    )
    .expect("json");
    let first = summary("arm64");
    let first = first
        .iter()
        .find(|i| i["name"] == "restic")
        .expect("restic");
    assert_eq!(again[0]["manifest"], first["manifest"]);
    assert_eq!(again[0]["layers"], first["layers"]);
    let _ = b;
}

#[test]
fn bad_recipes_and_names_exit_2_naming_the_key() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().join("images/containers");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let out = data.path().join("out");
    let cases = [
        ("user = \"ghost\"\n", "user"),
        ("dirs = [{ path = \"var/x\" }]\n", "dirs[0].path"),
        ("colour = \"blue\"\n", "colour"),
        ("", "pins"),
        // An upstream image is used as it is: packages beside it are refused.
        ("upstream = \"127.0.0.1:1/a/b:1\"\n", "packages"),
        (
            "[[upstream_pins]]\narch = \"amd64\"\ndigest = \"sha256:00\"\nsize = 1\n",
            "upstream_pins",
        ),
    ];
    for (extra, key) in cases {
        std::fs::write(
            dir.join("x.toml"),
            format!("description = \"t\"\npackages = [\"restic\"]\nentrypoint = [\"/usr/bin/restic\"]\n{extra}"),
        )
        .expect("write");
        let o = hc(
            &[
                "images",
                "build",
                "x",
                "--arch",
                "amd64",
                "--out",
                out.to_str().expect("utf-8"),
            ],
            &[("HC_DATA_DIR", data.path())],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(
            err.contains("x.toml") && err.contains(key),
            "{extra:?} should name {key}: {err}"
        );
        assert!(!out.join("oci-amd64").exists(), "nothing half written");
    }
    let o = hc(&["images", "build", "nosuch"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("restic"),
        "lists the recipes"
    );
    let o = hc(&["images", "build", "restic", "--arch", "mips"], &[]);
    assert_eq!(o.status.code(), Some(2));
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> Option<String>) -> String {
    let t = Instant::now();
    loop {
        if let Some(s) = f() {
            return s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn curl(args: &[&str]) -> Option<String> {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The programs' own answers, asked the way their clients ask.
#[test]
fn each_image_program_starts_and_answers() {
    let b = built();
    let d = Dockerd::start().expect("dockerd");
    for arch in ["amd64", "arm64"] {
        let loaded = d
            .load_layout(&b.out.join(format!("oci-{arch}")))
            .expect("load");
        for name in recipes() {
            assert!(loaded.contains(&reference(arch, &name)), "{arch}: {loaded}");
        }
        // `docker run` of an image of this arch, optionally another program of it.
        let run_with = |entrypoint: Option<&str>, name: &str, extra: &[&str]| -> String {
            let r = reference(arch, name);
            let platform = format!("linux/{arch}");
            let mut args = vec!["run", "--rm", "--network", "none", "--platform", &platform];
            if let Some(e) = entrypoint {
                args.extend_from_slice(&["--entrypoint", e]);
            }
            args.push(&r);
            args.extend_from_slice(extra);
            d.run(&args)
                .unwrap_or_else(|e| panic!("{arch} {name}: {e:#}"))
        };
        let run = |name: &str, extra: &[&str]| run_with(None, name, extra);
        // The base: a shell, Debian 13's os-release, zones and the CA bundle.
        let v = run(
            "base",
            &["sh", "-c", "grep VERSION_ID /etc/os-release; test -s /usr/share/zoneinfo/Europe/Berlin && echo zones; grep -c BEGIN /etc/ssl/certs/ca-certificates.crt"],
        );
        let lines: Vec<&str> = v.lines().collect();
        assert_eq!(lines[..2], ["VERSION_ID=\"13\"", "zones"], "{v}");
        assert!(
            lines[2].parse::<u32>().is_ok_and(|n| n > 100),
            "certificates: {v}"
        );
        // calibre-web's Python: Debian's packages and the four wheels,
        // compiled ones for this CPU, all import.
        let v = run_with(Some("/usr/bin/python3"), "calibre-web", &["-c",
                "import calibreweb, flask_babel, pypdf, nh3, netifaces, lxml, sqlalchemy; print('imports ok')"]);
        assert_eq!(v.trim(), "imports ok");
        let v = run("restic", &[]);
        assert!(
            v.starts_with("restic 0.") && v.contains(&format!("linux/{arch}")),
            "{v}"
        );
        let v = run("syncthing", &["--version"]);
        assert!(
            v.starts_with("syncthing v1.") && v.contains(&format!("linux-{arch}")),
            "{v}"
        );
        // The image's program (entrypoint) under --version; the daemons
        // themselves are started below on amd64, where they are quick.
        let v = run_with(Some("/usr/bin/docker-registry"), "registry", &["--version"]);
        assert!(v.contains("distribution"), "{v}");
        let v = run_with(Some("/usr/sbin/mariadbd"), "mariadb", &["--version"]);
        assert!(v.contains("MariaDB") && v.contains("11."), "{v}");
        let v = run("redis", &["--version"]);
        assert!(v.starts_with("Redis server v="), "{v}");
        let v = run("traefik", &["version"]);
        assert!(
            v.contains("Version:") && v.contains(&format!("linux/{arch}")),
            "{v}"
        );
        let v = run_with(Some("/usr/sbin/smbd"), "samba", &["-b"]);
        assert!(v.contains("CONFIGFILE: /etc/samba/smb.conf"), "{v}");
        if arch == "arm64" {
            continue;
        }
        // Redis answers PING from its own client.
        let redis = d
            .run(&[
                "run",
                "-d",
                "--network",
                "host",
                &reference(arch, "redis"),
                "--port",
                "16379",
                "--bind",
                "127.0.0.1",
            ])
            .expect("redis")
            .trim()
            .to_string();
        let pong = wait_for("redis PING", 30, || {
            d.run(&["exec", &redis, "redis-cli", "-p", "16379", "PING"])
                .ok()
                .filter(|s| s.trim() == "PONG")
        });
        assert_eq!(pong.trim(), "PONG");
        // MariaDB: the first start creates the system tables, a query is
        // answered over the socket, and a restart keeps the data.
        let mdb = d
            .run(&[
                "run",
                "-d",
                "--network",
                "none",
                &reference(arch, "mariadb"),
            ])
            .expect("mariadb")
            .trim()
            .to_string();
        let sql = |q: &str| d.run(&["exec", &mdb, "mariadb", "-N", "-e", q]).ok();
        wait_for("mariadb answers", 90, || sql("SELECT 1"));
        sql("CREATE DATABASE family; CREATE TABLE family.t (v INT); INSERT INTO family.t VALUES (42)").expect("write");
        d.run(&["restart", &mdb]).expect("restart");
        let v = wait_for("mariadb after a restart", 90, || {
            sql("SELECT v FROM family.t")
        });
        assert_eq!(v.trim(), "42");
        // smbd starts as the image runs it and takes connections.
        d.run(&[
            "run",
            "-d",
            "--network",
            "host",
            &reference(arch, "samba"),
            "--port",
            "10445",
        ])
        .expect("smbd");
        wait_for("smbd listening", 60, || {
            std::net::TcpStream::connect("127.0.0.1:10445")
                .ok()
                .map(|_| "up".into())
        });
        // Traefik serves its ping endpoint.
        d.run(&[
            "run",
            "-d",
            "--network",
            "host",
            &reference(arch, "traefik"),
            "--ping=true",
            "--entrypoints.web.address=127.0.0.1:18080",
            "--ping.entrypoint=web",
        ])
        .expect("traefik");
        let ok = wait_for("traefik /ping", 60, || {
            curl(&["-f", "http://127.0.0.1:18080/ping"])
        });
        assert_eq!(ok.trim(), "OK");
        // calibre-web serves its login page.
        d.run(&[
            "run",
            "-d",
            "--network",
            "host",
            &reference(arch, "calibre-web"),
        ])
        .expect("calibre-web");
        let page = wait_for("calibre-web /login", 120, || {
            curl(&["-f", "http://127.0.0.1:8083/login"])
        });
        assert!(
            page.contains("<title>Calibre-Web | Login</title>"),
            "{page}"
        );
        // Syncthing's REST API answers a ping with the key it was given.
        d.run(&[
            "run",
            "-d",
            "--network",
            "host",
            &reference(arch, "syncthing"),
            "serve",
            "--no-browser",
            "--no-restart",
            "--home=/var/lib/syncthing",
            "--gui-address=127.0.0.1:18384",
            "--gui-apikey=hc-test-key",
        ])
        .expect("syncthing");
        let ping = wait_for("syncthing REST ping", 60, || {
            curl(&[
                "-H",
                "X-API-Key: hc-test-key",
                "http://127.0.0.1:18384/rest/system/ping",
            ])
        });
        assert!(ping.contains("pong"), "{ping}");
        // The registry with generated credentials: docker logs in, pushes an
        // image and pulls it back by the digest the push reported.
        let auth = tempfile::tempdir().expect("tempdir");
        let hp = Command::new("htpasswd")
            .args(["-Bbn", "family", "hc-test-pass"])
            .output()
            .expect("htpasswd (apache2-utils)");
        assert!(hp.status.success());
        std::fs::write(auth.path().join("htpasswd"), &hp.stdout).expect("htpasswd file");
        let mount = format!(
            "{}:/etc/docker/registry/htpasswd:ro",
            auth.path().join("htpasswd").display()
        );
        d.run(&[
            "run",
            "-d",
            "--network",
            "host",
            "-e",
            "REGISTRY_HTTP_ADDR=127.0.0.1:15000",
            "-v",
            &mount,
            &reference(arch, "registry"),
        ])
        .expect("registry");
        wait_for("registry /v2/ with credentials", 30, || {
            curl(&[
                "-f",
                "-u",
                "family:hc-test-pass",
                "http://127.0.0.1:15000/v2/",
            ])
        });
        assert!(
            curl(&["-f", "http://127.0.0.1:15000/v2/"]).is_none(),
            "anonymous access refused"
        );
        let mut login = d.cmd();
        login.args([
            "login",
            "127.0.0.1:15000",
            "-u",
            "family",
            "--password-stdin",
        ]);
        let out = hc_tests::run_with_stdin(&mut login, b"hc-test-pass").expect("docker login");
        assert!(out.contains("Login Succeeded"), "{out}");
        let pushed = "127.0.0.1:15000/family/restic:test";
        d.run(&["tag", &reference(arch, "restic"), pushed])
            .expect("tag");
        let push = d.run(&["push", pushed]).expect("push");
        let digest = push
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .unwrap_or_else(|| panic!("no digest in {push}"))
            .to_string();
        d.run(&["rmi", pushed]).expect("rmi");
        let by_digest = format!("127.0.0.1:15000/family/restic@{digest}");
        d.run(&["pull", &by_digest]).expect("pull by digest");
        let v = d
            .run(&["run", "--rm", "--network", "none", &by_digest])
            .expect("run pulled");
        assert!(v.starts_with("restic 0."), "{v}");
        upstream_images_are_pinned_and_pulled_by_digest(&d, &digest);
        a_seeded_store_serves_every_image_by_digest(&d, b, arch);
    }
}

/// What first boot does on a node (the agent's `registry` step, its own
/// code): the store seeded from the layout, the registry image run with the
/// agent's configuration; dockerd pulls every image by the digest the build
/// recorded, and a pulled image runs. Seeding again copies nothing.
fn a_seeded_store_serves_every_image_by_digest(d: &Dockerd, b: &Built, arch: &str) {
    use hc_firstboot::registry::{seed::seed, step::config_yml};
    let layout = b.out.join(format!("oci-{arch}"));
    let store = tempfile::tempdir().expect("tempdir");
    let first = seed(&layout, store.path()).expect("seed");
    assert_eq!(first.images.len(), recipes().len(), "{first:?}");
    assert!(first.blobs_copied > 0);
    let again = seed(&layout, store.path()).expect("seed again");
    // A blob shared by images is counted once per image that names it.
    assert_eq!(again.blobs_copied, 0, "{again:?}");
    assert!(again.blobs_present >= first.blobs_copied, "{again:?}");
    // The registry runs as its own user: the store must be readable.
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(store.path())
        .status();
    let conf = store.path().join("config.yml");
    // The agent's configuration, on another port: 5000 may be in use here.
    std::fs::write(
        &conf,
        config_yml().replace("127.0.0.1:5000", "127.0.0.1:15001"),
    )
    .expect("config");
    d.run(&[
        "run",
        "-d",
        "--network",
        "host",
        "-v",
        &format!("{}:/var/lib/docker-registry", store.path().display()),
        "-v",
        &format!("{}:/etc/docker/registry/config.yml:ro", conf.display()),
        &reference(arch, "registry"),
    ])
    .expect("registry on the seeded store");
    wait_for("the seeded registry", 30, || {
        curl(&["-f", "http://127.0.0.1:15001/v2/"])
    });
    for img in summary(arch) {
        let repo = img["reference"]
            .as_str()
            .and_then(|r| r.rsplit_once(':'))
            .map(|(r, _)| r.to_string())
            .expect("reference");
        let by_digest = format!(
            "127.0.0.1:15001/{repo}@{}",
            img["manifest"].as_str().expect("digest")
        );
        d.run(&["pull", "--platform", &format!("linux/{arch}"), &by_digest])
            .unwrap_or_else(|e| panic!("pull {by_digest}: {e:#}"));
        let digests = d
            .run(&[
                "image",
                "inspect",
                "--format",
                "{{json .RepoDigests}}",
                &by_digest,
            ])
            .expect("inspect");
        assert!(digests.contains(&by_digest), "{digests}");
    }
    let base = summary(arch)
        .iter()
        .find(|i| i["name"] == "base")
        .and_then(|i| i["manifest"].as_str().map(str::to_string))
        .expect("base");
    let v = d
        .run(&[
            "run",
            "--rm",
            "--network",
            "none",
            &format!("127.0.0.1:15001/homecloud/base@{base}"),
            "echo",
            "pulled",
        ])
        .expect("run pulled base");
    assert_eq!(v.trim(), "pulled");
}

/// The online path (issue 14): an upstream recipe is pinned from, and
/// pulled by digest out of, the registry above (docker login's
/// credentials); the digest survives into the layout; a wrong digest, an
/// unknown tag and an unreachable registry exit 2; a pulled image rebuilds
/// offline from the cache and not without it.
fn upstream_images_are_pinned_and_pulled_by_digest(d: &Dockerd, digest: &str) {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let out = data.path().join("out");
    let recipe = data.path().join("images/containers/up.toml");
    std::fs::create_dir_all(recipe.parent().expect("dir")).expect("mkdir");
    let write = |image: &str, pins: &str| {
        std::fs::write(
            &recipe,
            format!("description = \"restic, pushed by the test\"\nupstream = \"{image}\"\n{pins}"),
        )
        .expect("recipe")
    };
    let client = d.dir.path().join("client");
    let env = |cache: &Path| -> Vec<(&str, PathBuf)> {
        vec![
            ("HC_DATA_DIR", data.path().to_path_buf()),
            ("HC_CACHE_DIR", cache.to_path_buf()),
            ("DOCKER_CONFIG", client.clone()),
        ]
    };
    let run = |args: &[&str], cache: &Path| {
        let e = env(cache);
        let e: Vec<(&str, &Path)> = e.iter().map(|(k, v)| (*k, v.as_path())).collect();
        hc(args, &e)
    };
    let outs = out.to_str().expect("utf-8");
    let build = ["images", "build", "up", "--arch", "amd64", "--out", outs];
    write("127.0.0.1:15000/family/restic:test", "");
    let o = run(&["images", "pin", "up"], cache.path());
    assert!(
        o.status.success(),
        "pin: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&recipe).expect("recipe");
    assert!(
        text.contains(digest) && text.contains("arch = \"amd64\""),
        "{text}"
    );
    let o = run(&build, cache.path());
    assert!(
        o.status.success(),
        "build: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s: Value =
        serde_json::from_slice(&std::fs::read(out.join("images-amd64.json")).expect("summary"))
            .expect("json");
    assert_eq!(s[0]["manifest"], digest, "the upstream digest is kept");
    let loaded = d.load_layout(&out.join("oci-amd64")).expect("load");
    assert!(loaded.contains("homecloud/up:test"), "{loaded}");
    let v = d
        .run(&["run", "--rm", "--network", "none", "homecloud/up:test"])
        .expect("run");
    assert!(v.starts_with("restic 0."), "{v}");
    let refuse = |o: Output, words: &[&str]| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        for w in words {
            assert!(err.contains(w), "{w:?} in {err}");
        }
    };
    // The same pin rebuilds with the registry gone, from the cache...
    let pins = text
        .split_once("[[upstream_pins]]")
        .map(|(_, p)| format!("[[upstream_pins]]{p}"))
        .expect("pins");
    write("127.0.0.1:1/family/restic:test", &pins);
    let o = run(&build, cache.path());
    assert!(
        o.status.success(),
        "offline rebuild: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // ...and not from an empty one: the service, the image and the fix.
    let empty = tempfile::tempdir().expect("tempdir");
    refuse(
        run(&build, empty.path()),
        &[
            "up.toml",
            "127.0.0.1:1/family/restic",
            "cannot reach",
            "build once while online",
        ],
    );
    refuse(
        run(&["images", "pin", "up"], empty.path()),
        &["up.toml", "cannot reach"],
    );
    // An unknown tag, and a digest the registry does not have.
    write("127.0.0.1:15000/family/restic:nosuch", "");
    refuse(
        run(&["images", "pin", "up"], empty.path()),
        &["upstream", "does not exist"],
    );
    let zero = format!("sha256:{}", "0".repeat(64));
    write(
        "127.0.0.1:15000/family/restic:test",
        &pins.replace(digest, &zero),
    );
    refuse(
        run(&build, empty.path()),
        &["upstream_pins[0].digest", "does not exist"],
    );
    // A digest with the tag is refused: the digest is what pin writes.
    write(&format!("127.0.0.1:15000/family/restic:test@{digest}"), "");
    refuse(run(&build, empty.path()), &["upstream", "carries a digest"]);
}

/// The benchmark runs end to end and reports every figure it promises.
#[test]
fn bench_images_reports_cold_warm_and_bytes() {
    let o = hc(&["bench", "images", "--arch", "amd64"], &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = text
        .lines()
        .find(|l| l.starts_with("BENCH images "))
        .unwrap_or_else(|| panic!("no BENCH line in {text}"));
    println!("{line}");
    for key in [
        "cold_s=",
        "debs_cached_s=",
        "warm_s=",
        "warm_ratio=",
        "layout_bytes=",
        "zst_bytes=",
    ] {
        let v: f64 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} missing: {line}"))
            .parse()
            .expect("a number");
        assert!(v > 0.0, "{key} in {line}");
    }
}
