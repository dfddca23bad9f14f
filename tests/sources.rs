// SPDX-License-Identifier: Apache-2.0
//! Extra apt sources (`[[base.sources]]`) end to end: a local flat repository
//! signed with a throwaway OpenPGP key, served over HTTP on 127.0.0.1, used as
//! a second source of a native amd64 minbase base. The package from it must
//! be in the built image's package list, and the image must keep the source
//! and its keyring under /etc/apt/keyrings/. A repository signed by another
//! key must be refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PKG: &str = "hc-e2e-hello";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Fails (never skips) when a host tool is missing, naming the package.
fn need(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "host tool `{tool}` not found; install it with: apt-get install -y {package} (or run .ci/install-deps)"
            )
        })
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A throwaway signing key in its own GNUPGHOME; returns the public keyring.
fn make_key(gpg: &Path, home: &Path, uid: &str) -> Vec<u8> {
    std::fs::create_dir_all(home).expect("gnupg home");
    std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("gnupg home mode");
    run(Command::new(gpg)
        .env("GNUPGHOME", home)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args(["--quick-gen-key", uid, "ed25519", "sign", "never"]));
    run(Command::new(gpg).env("GNUPGHOME", home).arg("--export")).stdout
}

/// A flat repository (`deb URI ./`) with one tiny package, signed InRelease.
fn make_repo(dir: &Path, gpg: &Path, home: &Path) {
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(pkg.join("DEBIAN")).expect("mkdir");
    std::fs::create_dir_all(pkg.join(format!("usr/share/{PKG}"))).expect("mkdir");
    std::fs::write(
        pkg.join("DEBIAN/control"),
        format!(
            "Package: {PKG}\nVersion: 1.0\nArchitecture: all\nMaintainer: hc-image tests <tests@invalid>\nDescription: test package from a signed local repository\n"
        ),
    )
    .expect("control");
    std::fs::write(pkg.join(format!("usr/share/{PKG}/hello.txt")), "hello\n").expect("file");
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    run(Command::new(need("dpkg-deb", "dpkg"))
        .args(["--root-owner-group", "--build"])
        .arg(&pkg)
        .arg(repo.join(format!("{PKG}_1.0_all.deb"))));
    let ftp = need("apt-ftparchive", "apt-utils");
    let packages = run(Command::new(&ftp)
        .current_dir(&repo)
        .args(["packages", "."]))
    .stdout;
    std::fs::write(repo.join("Packages"), packages).expect("Packages");
    let release = run(Command::new(&ftp).current_dir(&repo).args(["release", "."])).stdout;
    std::fs::write(repo.join("Release"), release).expect("Release");
    run(Command::new(gpg)
        .env("GNUPGHOME", home)
        .args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ])
        .args(["--clearsign", "-o"])
        .arg(repo.join("InRelease"))
        .arg(repo.join("Release")));
}

/// Serves `root` over HTTP/1.0 on 127.0.0.1 until the test process ends.
fn serve(root: PathBuf) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let Ok(read) = s.try_clone() else { return };
                let mut r = BufReader::new(read);
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    return;
                }
                // Skip the headers.
                loop {
                    let mut h = String::new();
                    match r.read_line(&mut h) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if h.trim().is_empty() => break,
                        Ok(_) => {}
                    }
                }
                let mut parts = first.split_whitespace();
                let method = parts.next().unwrap_or("");
                let path = parts.next().unwrap_or("/");
                let rel = path.trim_start_matches('/');
                let body = (!rel.split('/').any(|c| c == ".."))
                    .then(|| std::fs::read(root.join(rel)).ok())
                    .flatten();
                let _ = match body {
                    Some(b) => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        );
                        if method == "GET" {
                            s.write_all(&b)
                        } else {
                            Ok(())
                        }
                    }
                    None => s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            });
        }
    });
    port
}

/// A data directory with the repository's boards and overlays and our profile.
fn data_dir(dir: &Path, name: &str, profile: &str, keyrings: &[(&str, &[u8])]) -> PathBuf {
    let data = dir.join(format!("data-{name}"));
    std::fs::create_dir_all(data.join("images")).expect("mkdir");
    for d in ["boards", "overlays"] {
        std::os::unix::fs::symlink(repo_root().join(d), data.join(d)).expect("symlink");
    }
    std::fs::write(data.join(format!("images/{name}.toml")), profile).expect("profile");
    for (file, bytes) in keyrings {
        std::fs::write(data.join("images").join(file), bytes).expect("keyring");
    }
    data
}

fn profile(name: &str, port: u16, keyring: &str, pin: Option<&str>) -> String {
    let pin = pin.map_or(String::new(), |p| format!("keyring_sha256 = \"{p}\"\n"));
    format!(
        "schema = 1\nname = \"{name}\"\ndescription = \"extra source test\"\nsource_date_epoch = 1735689600\n\
         [base]\nsuite = \"trixie\"\nvariant = \"minbase\"\npackages = [\"{PKG}\"]\n\
         exclude = [\"/usr/share/man/*\", \"/usr/share/doc/*\", \"/usr/share/locale/*\"]\n\
         [[base.sources]]\nuri = \"http://127.0.0.1:{port}\"\nsuite = \"./\"\nkeyring = \"{keyring}\"\n{pin}"
    )
}

fn build(data: &Path, cache: &Path, image: &str, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hc-image"))
        .args(["build", "--board", "amd64", "--image", image, "--config"])
        .arg(repo_root().join("examples/homecloud.toml"))
        .arg("--out")
        .arg(out)
        .env("HC_DATA_DIR", data)
        .env("HC_CACHE_DIR", cache)
        .output()
        .expect("running hc-image")
}

/// `path` -> content for the named members of the base tarball.
fn members(tarball: &Path, wanted: &[&str]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let f = std::fs::File::open(tarball).expect("open base");
    let mut a = tar::Archive::new(zstd::stream::read::Decoder::new(f).expect("zstd"));
    let mut out = std::collections::BTreeMap::new();
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        let p = e.path().expect("path").to_string_lossy().into_owned();
        let p = p.trim_start_matches("./").to_string();
        if wanted.contains(&p.as_str()) {
            let mut b = Vec::new();
            e.read_to_end(&mut b).expect("read member");
            out.insert(p, b);
        }
    }
    out
}

#[test]
fn extra_signed_source_is_used_and_kept_in_the_image() {
    need("mmdebstrap", "mmdebstrap");
    let gpg = need("gpg", "gpg");
    let t = tempfile::tempdir().expect("tempdir");
    let home = t.path().join("gnupg");
    let keyring = make_key(&gpg, &home, "hc-image test repository <repo@invalid>");
    assert!(!keyring.is_empty(), "gpg exported no key");
    make_repo(t.path(), &gpg, &home);
    let port = serve(t.path().join("repo"));
    let cache = t.path().join("cache");

    // A key that did not sign the repository: apt must refuse it. Quick: it
    // fails at `apt-get update`, before any package is downloaded.
    let other = make_key(
        &gpg,
        &t.path().join("gnupg-other"),
        "someone else <other@invalid>",
    );
    let data = data_dir(
        t.path(),
        "e2e-wrongkey",
        &profile("e2e-wrongkey", port, "other.gpg", None),
        &[("other.gpg", &other)],
    );
    let out = build(&data, &cache, "e2e-wrongkey", &t.path().join("out-wrong"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a repository signed by another key was accepted:\n{err}"
    );
    assert!(
        err.contains("NO_PUBKEY")
            || err.contains("not signed")
            || err.contains("couldn't be verified"),
        "expected a signature failure:\n{err}"
    );

    // The real key, pinned.
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&keyring));
    let data = data_dir(
        t.path(),
        "e2e-sources",
        &profile("e2e-sources", port, "repo.gpg", Some(&sha)),
        &[("repo.gpg", &keyring)],
    );
    let out_dir = t.path().join("out");
    let started = std::time::Instant::now();
    let out = build(&data, &cache, "e2e-sources", &out_dir);
    assert!(
        out.status.success(),
        "build failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "amd64 minbase build with the extra source: {:.0}s",
        started.elapsed().as_secs_f64()
    );

    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("manifest.json")).expect("manifest"))
            .expect("manifest json");
    assert_eq!(m["base"]["kind"], "packages", "{}", m["base"]);
    assert_eq!(
        m["base"]["packages"][PKG], "1.0",
        "package list: {}",
        m["base"]["packages"]
    );
    assert_eq!(
        m["base"]["recipe"]["sources"][0]["keyring_sha256"],
        sha.as_str()
    );

    let bases = cache.join("bases");
    let tarball = std::fs::read_dir(&bases)
        .expect("bases")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.to_string_lossy().contains("e2e-sources") && p.to_string_lossy().ends_with(".tar.zst")
        })
        .expect("cached base tarball");
    let list = std::fs::read_to_string(
        tarball.with_file_name(
            tarball
                .file_name()
                .expect("name")
                .to_string_lossy()
                .replace(".tar.zst", ".packages"),
        ),
    )
    .expect("package list");
    assert!(list.lines().any(|l| l == format!("{PKG}\t1.0")), "{list}");
    let meta = tarball.with_file_name(
        tarball
            .file_name()
            .expect("name")
            .to_string_lossy()
            .replace(".tar.zst", ".meta.json"),
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("meta.json")).expect("meta json");
    assert!(meta["seconds"].as_f64().is_some_and(|s| s > 0.0), "{meta}");

    let got = members(
        &tarball,
        &[
            "etc/apt/sources.list",
            "etc/apt/keyrings/repo.gpg",
            "usr/share/hc-e2e-hello/hello.txt",
        ],
    );
    let sources = String::from_utf8_lossy(&got["etc/apt/sources.list"]).into_owned();
    assert!(
        sources.contains(&format!(
            "deb [signed-by=\"/etc/apt/keyrings/repo.gpg\"] http://127.0.0.1:{port} ./"
        )),
        "sources.list in the image:\n{sources}"
    );
    assert!(
        !sources.contains("hc-keyrings-"),
        "host path left in:\n{sources}"
    );
    assert_eq!(got["etc/apt/keyrings/repo.gpg"], keyring);
    assert_eq!(got["usr/share/hc-e2e-hello/hello.txt"], b"hello\n");
}
