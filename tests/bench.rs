// SPDX-License-Identifier: Apache-2.0
//! `hc-image bench image` is wired up (the benchmark itself builds and boots
//! for many minutes; it is run by hand, not here).

use std::process::Command;

#[test]
fn bench_image_help_lists_its_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_hc-image"))
        .args(["bench", "image", "--help"])
        .output()
        .expect("running hc-image");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for opt in ["--board", "--cold", "--image", "--config"] {
        assert!(text.contains(opt), "{opt} missing from:\n{text}");
    }
    // The filesystem benchmark is still there beside it.
    let out = Command::new(env!("CARGO_BIN_EXE_hc-image"))
        .args(["bench", "--help"])
        .output()
        .expect("running hc-image");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("--size-mib") && text.contains("image"),
        "{text}"
    );
}
