// SPDX-License-Identifier: Apache-2.0
//! Artifacts against bmaptool, byte for byte.

use std::path::Path;

use super::bmap::human_size;
use super::*;
use std::fs::File;

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::Command;

const BMAPTOOL_MISSING: &str = "install bmap-tools: apt-get install bmap-tools";

/// Deterministic incompressible-ish bytes with no all-zero 4K block.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8 | 1
        })
        .collect()
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image for write");
    f.write_all_at(data, offset).expect("write image data");
}

/// Sparse image: data at odd offsets, an all-zero written region, a
/// run ending mid-block, data across a window edge and a short tail block.
fn make_sparse_image(dir: &Path) -> PathBuf {
    let path = dir.join("disk.img");
    let size = (64 << 20) + 2500;
    File::create(&path)
        .expect("create image")
        .set_len(size)
        .expect("size image");
    // Ends mid-block.
    write_at(&path, 0, &noise(1000, 1));
    // Odd offset, crosses the 4 MiB window edge at 8 MiB.
    write_at(&path, (5 << 20) + 123, &noise(3 << 20, 2));
    // Written but all zero: allocated, yet must stay unmapped.
    write_at(&path, 20 << 20, &vec![0u8; 1 << 20]);
    // Data, zero block, data inside one allocated extent.
    let mut mixed = noise(3 * 4096, 3);
    mixed[4096..8192].fill(0);
    write_at(&path, (21 << 20) + 4096 * 3, &mixed);
    // Last full block and the partial tail block.
    write_at(&path, (64 << 20) - 10, &noise(2510, 4));
    path
}

fn naive_sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read file")))
}

/// Non-zero 4K blocks, counted the slow obvious way.
fn naive_mapped_bytes(bytes: &[u8]) -> u64 {
    bytes
        .chunks(4096)
        .filter(|b| b.iter().any(|&c| c != 0))
        .map(|b| b.len() as u64)
        .sum()
}

fn run(img: &Path, out: &Path, tag: &str) -> (ImageDigest, PathBuf, PathBuf) {
    let zst = out.join(format!("{tag}.img.zst"));
    let bmap = out.join(format!("{tag}.bmap"));
    let d = digest_and_compress(img, &zst, &bmap).expect("digest_and_compress");
    (d, zst, bmap)
}

fn bmaptool(args: &[&std::ffi::OsStr]) -> std::process::Output {
    match Command::new("bmaptool").args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!("{BMAPTOOL_MISSING}"),
        Err(e) => panic!("running bmaptool: {e}"),
    }
}

#[test]
fn sparse_image_roundtrips_through_bmaptool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = make_sparse_image(dir.path());
    let bytes = std::fs::read(&img).expect("read image");
    let (d, zst, bmap) = run(&img, dir.path(), "a");

    assert_eq!(d.size, bytes.len() as u64);
    assert_eq!(d.sha256, naive_sha256(&img));
    assert_eq!(d.zst_sha256, naive_sha256(&zst));
    assert_eq!(d.bmap_sha256, naive_sha256(&bmap));
    assert_eq!(d.mapped_bytes, naive_mapped_bytes(&bytes));

    let zst_bytes = std::fs::read(&zst).expect("read zst");
    let decoded = zstd::stream::decode_all(&zst_bytes[..]).expect("decode zst");
    assert!(decoded == bytes, "zst does not decode to the image");
    // The seek table covers the image; each frame names its size.
    let frames = super::seekable::frames(&File::open(&zst).expect("open zst"))
        .expect("read zst")
        .expect("a seek table");
    assert_eq!(
        frames.iter().map(|f| f.len).sum::<u64>(),
        bytes.len() as u64
    );
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&zst_bytes).ok(),
        Some(Some(frames[0].len))
    );

    let dest = dir.path().join("dest.img");
    let out = bmaptool(&[
        "copy".as_ref(),
        "--bmap".as_ref(),
        bmap.as_os_str(),
        zst.as_os_str(),
        dest.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "bmaptool copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(naive_sha256(&dest), d.sha256);

    // Deterministic: a second run gives the same bytes.
    let (d2, zst2, bmap2) = run(&img, dir.path(), "b");
    assert_eq!(d, d2);
    assert!(std::fs::read(&zst2).expect("read zst2") == zst_bytes);
    assert_eq!(
        std::fs::read(&bmap2).expect("read bmap2"),
        std::fs::read(&bmap).expect("read bmap")
    );
}

#[test]
fn bmaptool_rejects_tampered_bmap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = make_sparse_image(dir.path());
    let (_, zst, bmap) = run(&img, dir.path(), "a");
    let text = std::fs::read_to_string(&bmap).expect("read bmap");
    // A single-character edit must break the file checksum.
    let tampered = text.replacen("<BlockSize> 4096 ", "<BlockSize> 4096\t", 1);
    assert_ne!(tampered, text);
    std::fs::write(&bmap, tampered).expect("write bmap");
    let dest = dir.path().join("dest.img");
    let out = bmaptool(&[
        "copy".as_ref(),
        "--bmap".as_ref(),
        bmap.as_os_str(),
        zst.as_os_str(),
        dest.as_os_str(),
    ]);
    assert!(!out.status.success(), "bmaptool accepted a tampered bmap");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "unexpected bmaptool error: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn output_depends_only_on_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sparse = make_sparse_image(dir.path());
    // Same bytes, fully allocated: no holes at all.
    let dense = dir.path().join("dense.img");
    std::fs::write(&dense, std::fs::read(&sparse).expect("read sparse")).expect("write dense");
    let (ds, zs, bs) = run(&sparse, dir.path(), "sparse");
    let (dd, zd, bd) = run(&dense, dir.path(), "dense");
    assert_eq!(ds, dd);
    assert!(std::fs::read(zs).expect("read zst") == std::fs::read(zd).expect("read zst"));
    assert_eq!(
        std::fs::read(bs).expect("read bmap"),
        std::fs::read(bd).expect("read bmap")
    );
}

#[test]
fn zst_does_not_depend_on_worker_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = make_sparse_image(dir.path());
    let outs: Vec<Vec<u8>> = [1u32, 3]
        .iter()
        .map(|&w| {
            let zst = dir.path().join(format!("w{w}.zst"));
            let bmap = dir.path().join(format!("w{w}.bmap"));
            digest_and_compress_with(&img, &zst, &bmap, w).expect("digest_and_compress");
            std::fs::read(zst).expect("read zst")
        })
        .collect();
    assert!(outs[0] == outs[1], "zst differs between 1 and 3 workers");
}

/// Where allocation equals non-zero content (MiB-aligned data, holes
/// elsewhere), `bmaptool create` must produce exactly our bytes.
#[test]
fn matches_bmaptool_create_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("aligned.img");
    let size = (9 << 20) + 1000;
    File::create(&img)
        .expect("create image")
        .set_len(size)
        .expect("size image");
    write_at(&img, 0, &noise(1 << 20, 5));
    write_at(&img, 3 << 20, &noise(2 << 20, 6));
    write_at(&img, 9 << 20, &noise(1000, 7));
    let (_, _, ours) = run(&img, dir.path(), "ours");

    let theirs = dir.path().join("theirs.bmap");
    let out = bmaptool(&[
        "create".as_ref(),
        "-o".as_ref(),
        theirs.as_os_str(),
        img.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "bmaptool create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = std::fs::read_to_string(ours).expect("read ours");
    let theirs = std::fs::read_to_string(theirs).expect("read theirs");
    assert_eq!(ours, theirs);
}

/// Expected strings recorded from bmaptools 3.6 `BmapHelpers.human_size`
/// (including its "%.1f" tie rounding and the EiB mislabel).
#[test]
fn human_size_matches_bmaptools() {
    let cases: [(u64, &str); 13] = [
        (1, "1 byte"),
        (2, "2 bytes"),
        (511, "511 bytes"),
        (512, "0.5 KiB"),
        (1280, "1.2 KiB"),
        (4096, "4.0 KiB"),
        ((9 << 20) + 1000, "9.0 MiB"),
        (3 * (1 << 20) + 4096, "3.0 MiB"),
        ((2 << 20) + (1 << 19) + 512, "2.5 MiB"),
        ((1 << 30) - 1, "1024.0 MiB"),
        ((5 << 30) + (1 << 28), "5.2 GiB"),
        (3 << 40, "3.0 TiB"),
        (1 << 62, "4194304.0 EiB"),
    ];
    for (size, want) in cases {
        assert_eq!(human_size(size), want, "size {size}");
    }
}

#[test]
fn empty_image_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("empty.img");
    File::create(&img).expect("create image");
    let err = digest_and_compress(&img, &dir.path().join("e.zst"), &dir.path().join("e.bmap"))
        .expect_err("empty image must fail");
    assert!(err.to_string().contains("empty image"), "{err}");
}

#[test]
fn missing_image_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("nope.img");
    let err = digest_and_compress(&img, &dir.path().join("n.zst"), &dir.path().join("n.bmap"))
        .expect_err("missing image must fail");
    assert!(format!("{err:#}").contains("opening"), "{err:#}");
    assert!(format!("{err:#}").contains("nope.img"), "{err:#}");
}
