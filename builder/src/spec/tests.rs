// SPDX-License-Identifier: Apache-2.0
//! Loading and checking the data files, against the repository's own.

use std::path::{Path, PathBuf};

use super::apt::check_keyring;
use super::*;
use crate::error::{parse_toml, InputError};

fn dirs() -> DataDirs {
    DataDirs {
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

#[test]
fn every_board_in_the_repo_loads() {
    let d = dirs();
    let names = d.board_names();
    assert_eq!(names, ["amd64", "pine64-lts", "qemu-arm64", "rock64"]);
    for n in names {
        d.load_board(&n).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn unknown_board_lists_known_ones() {
    let e = dirs().load_board("rpi5").expect_err("no such board");
    assert!(
        e.fix.contains("rock64") && e.fix.contains("pine64-lts"),
        "{e}"
    );
}

/// A profile with one extra source in a fresh directory, and its keyring.
fn profile_with(source: &str, keyring: Option<&[u8]>) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let path = d.path().join("p.toml");
    let text = format!(
        "schema = 1\nname = \"p\"\ndescription = \"t\"\nsource_date_epoch = 0\n[base]\npackages = [\"hello\"]\n[[base.sources]]\n{source}\n"
    );
    std::fs::write(&path, text).expect("write profile");
    if let Some(k) = keyring {
        std::fs::write(d.path().join("repo.gpg"), k).expect("write keyring");
    }
    (d, path)
}

const KEY: &[u8] = &[0x99, 0x00, 0x0d, 0x04, 1, 2, 3, 4];
const SRC: &str = "uri = \"http://apt.example.org\"\nsuite = \"trixie\"\ncomponents = [\"main\", \"trixie-utils\"]\nkeyring = \"repo.gpg\"";

fn load(path: &Path) -> Result<ImageProfile, InputError> {
    ImageProfile::load(path, &dirs().overlays())
}

#[test]
fn source_parses_resolves_and_renders() {
    let (_d, path) = profile_with(&format!("{SRC}\narchitectures = [\"arm64\"]"), Some(KEY));
    let p = load(&path).unwrap_or_else(|e| panic!("{e}"));
    let base = p.base.expect("base");
    assert_eq!(base.origin.as_deref(), Some(path.as_path()));
    let r = base.resolve_sources().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].keyring_name, "repo.gpg");
    assert_eq!(r[0].keyring, KEY);
    assert_eq!(r[0].keyring_sha256, crate::io::sha256_hex(KEY));
    assert_eq!(
        r[0].source.one_line("/etc/apt/keyrings/repo.gpg"),
        "deb [arch=arm64 signed-by=\"/etc/apt/keyrings/repo.gpg\"] http://apt.example.org trixie main trixie-utils"
    );
}

#[test]
fn missing_keyring_file_names_profile_field_and_fix() {
    let (_d, path) = profile_with(SRC, None);
    let base = load(&path).expect("structure is fine").base.expect("base");
    let e = base.resolve_sources().expect_err("no keyring file");
    assert_eq!(e.file, path.display().to_string(), "{e}");
    assert_eq!(e.key, "base.sources[0].keyring", "{e}");
    assert!(e.problem.contains("repo.gpg"), "{e}");
    assert!(
        e.fix.contains("OpenPGP key of http://apt.example.org"),
        "{e}"
    );
    assert!(
        e.fix
            .contains(&path.with_file_name("repo.gpg").display().to_string()),
        "{e}"
    );
}

#[test]
fn unsigned_source_is_refused_at_load() {
    let (_d, path) = profile_with(
        "uri = \"http://apt.example.org\"\nsuite = \"trixie\"\ncomponents = [\"main\"]",
        None,
    );
    let e = load(&path).expect_err("unsigned");
    assert_eq!(e.key, "base.sources[0].keyring", "{e}");
    assert!(
        e.problem.contains("unsigned repositories are refused"),
        "{e}"
    );
}

#[test]
fn keyring_pin_mismatch_names_both_hashes() {
    let pin = "0".repeat(64);
    let (_d, path) = profile_with(&format!("{SRC}\nkeyring_sha256 = \"{pin}\""), Some(KEY));
    let base = load(&path).expect("load").base.expect("base");
    let e = base.resolve_sources().expect_err("pin mismatch");
    assert_eq!(e.key, "base.sources[0].keyring_sha256", "{e}");
    let sha = crate::io::sha256_hex(KEY);
    assert!(e.problem.contains(&sha) && e.problem.contains(&pin), "{e}");
    assert!(e.fix.contains(&sha), "{e}");
    // The right pin passes.
    let (_d, path) = profile_with(&format!("{SRC}\nkeyring_sha256 = \"{sha}\""), Some(KEY));
    let base = load(&path).expect("load").base.expect("base");
    base.resolve_sources().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_sources_are_rejected_with_their_field() {
    let cases: &[(&str, &str)] = &[
        ("uri = \"apt.example.org\"\nsuite = \"trixie\"\ncomponents = [\"main\"]\nkeyring = \"repo.gpg\"", "uri"),
        ("uri = \"http://x\"\nsuite = \"\"\ncomponents = [\"main\"]\nkeyring = \"repo.gpg\"", "suite"),
        ("uri = \"http://x\"\nsuite = \"trixie\"\nkeyring = \"repo.gpg\"", "components"),
        ("uri = \"http://x\"\nsuite = \"./\"\ncomponents = [\"main\"]\nkeyring = \"repo.gpg\"", "components"),
        ("uri = \"http://x\"\nsuite = \"trixie\"\ncomponents = [\"main contrib\"]\nkeyring = \"repo.gpg\"", "components"),
        ("uri = \"http://x\"\nsuite = \"trixie\"\ncomponents = [\"main\"]\nkeyring = \"../repo.gpg\"", "keyring"),
        ("uri = \"http://x\"\nsuite = \"trixie\"\ncomponents = [\"main\"]\nkeyring = \"repo.key\"", "keyring"),
        ("uri = \"http://x\"\nsuite = \"trixie\"\ncomponents = [\"main\"]\nkeyring = \"repo.gpg\"\nkeyring_sha256 = \"abc\"", "keyring_sha256"),
        ("uri = \"http://x\"\nsuite = \"trixie\"\ncomponents = [\"main\"]\nkeyring = \"repo.gpg\"\narchitectures = [\"ARM64\"]", "architectures"),
    ];
    for (src, field) in cases {
        let (_d, path) = profile_with(src, Some(KEY));
        let e = load(&path).expect_err(src);
        assert_eq!(e.key, format!("base.sources[0].{field}"), "{src}: {e}");
    }
    // A flat repository has no components.
    let (_d, path) = profile_with(
        "uri = \"http://x\"\nsuite = \"./\"\nkeyring = \"repo.gpg\"",
        Some(KEY),
    );
    load(&path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn keyring_content_must_match_its_extension() {
    let armored =
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF\n-----END PGP PUBLIC KEY BLOCK-----\n";
    let (_d, path) = profile_with(SRC, Some(armored));
    let base = load(&path).expect("load").base.expect("base");
    let e = base.resolve_sources().expect_err("armored in .gpg");
    assert_eq!(e.key, "base.sources[0].keyring", "{e}");
    assert!(e.fix.contains("--dearmor"), "{e}");
    let (_d, path) = profile_with(SRC, Some(b"not a key"));
    let base = load(&path).expect("load").base.expect("base");
    assert!(base.resolve_sources().is_err());
    assert!(check_keyring(armored, "repo.asc").is_ok());
    assert!(check_keyring(KEY, "repo.asc").is_err());
    let mut kbx = vec![0u8, 0, 0, 32, 1, 1, 0, 0];
    kbx.extend_from_slice(b"KBXf");
    assert!(check_keyring(&kbx, "repo.gpg").is_err_and(|(p, _)| p.contains("keybox")));
}

#[test]
fn armbian_profile_names_its_keyring() {
    let d = dirs();
    let (p, path) = d
        .load_profile("homecloud-armbian")
        .unwrap_or_else(|e| panic!("{e}"));
    let base = p.base.expect("base");
    let s = &base.sources[0];
    assert_eq!(s.uri, "http://apt.armbian.com");
    assert_eq!(s.suite, "trixie");
    assert_eq!(s.components, ["main", "trixie-utils"]);
    assert_eq!(s.keyring.as_deref(), Some("armbian.gpg"));
    // Without Armbian's key beside the profile, the error says where it goes.
    if !path.with_file_name("armbian.gpg").exists() {
        let e = base
            .resolve_sources()
            .expect_err("no keyring in the repository");
        assert_eq!(e.key, "base.sources[0].keyring", "{e}");
        assert!(e.fix.contains("images/armbian.gpg"), "{e}");
    }
}

#[test]
fn unknown_key_in_board_is_rejected() {
    let d = dirs();
    let text = std::fs::read_to_string(d.boards().join("rock64.toml")).expect("read");
    let text = text.replace("[boot]\n", "[boot]\nkernel = \"x\"\n");
    let e = parse_toml::<BoardSpec>(&text, "rock64.toml").expect_err("unknown key");
    assert_eq!(e.key, "boot.kernel", "{e}");
}
