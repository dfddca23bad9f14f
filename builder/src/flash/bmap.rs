// SPDX-License-Identifier: Apache-2.0
//! Reads a bmaptool block map (format 1.x/2.x, as `artifacts` writes it and
//! `bmaptool create` does): image size, block size and the mapped ranges
//! with their sha256. The file's own `BmapFileChecksum` is checked the way
//! `bmaptool copy` checks it (hash with the checksum replaced by zeros).
//!
//! The format is a small fixed XML vocabulary, so this is a tag scanner, not
//! an XML parser: comments are dropped, then the known elements are read.
//! Anything unexpected is an error naming the element; nothing panics on
//! malformed input.

use sha2::{Digest, Sha256};

/// One mapped range in bytes: `start..end` of the image, clipped to its
/// size, and the sha256 of those bytes when the bmap carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
    pub sha256: Option<[u8; 32]>,
}

impl Range {
    /// A range without a hash: a sparse image's data extent.
    pub fn unhashed(start: u64, end: u64) -> Range {
        Range {
            start,
            end,
            sha256: None,
        }
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// A parsed, self-consistent block map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    /// Sorted, non-overlapping, inside `0..image_size`.
    pub ranges: Vec<Range>,
}

impl Bmap {
    /// Bytes the ranges cover.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(Range::len).sum()
    }
}

/// Why a bmap was rejected (the caller adds the file name and the fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BmapError(pub String);

fn err(msg: impl Into<String>) -> BmapError {
    BmapError(msg.into())
}

/// Text with every `<!-- ... -->` removed.
fn strip_comments(text: &str) -> Result<String, BmapError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 4..];
        let j = after
            .find("-->")
            .ok_or_else(|| err("unterminated <!-- comment"))?;
        rest = &after[j + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The text of the single `<tag>...</tag>` element, trimmed.
fn element<'a>(xml: &'a str, tag: &str) -> Result<&'a str, BmapError> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let i = xml
        .find(&open)
        .ok_or_else(|| err(format!("missing <{tag}>")))?;
    let body = &xml[i + open.len()..];
    let j = body
        .find(&close)
        .ok_or_else(|| err(format!("<{tag}> is not closed")))?;
    if body[j + close.len()..].contains(&open) {
        return Err(err(format!("<{tag}> appears twice")));
    }
    Ok(body[..j].trim())
}

fn number(xml: &str, tag: &str) -> Result<u64, BmapError> {
    let s = element(xml, tag)?;
    s.parse()
        .map_err(|_| err(format!("<{tag}> {s:?} is not a whole number")))
}

fn hex32(s: &str, what: &str) -> Result<[u8; 32], BmapError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| err(format!("{what} {s:?} is not 64 hex digits")))?;
    Ok(out)
}

/// Parses and checks a bmap file's bytes.
pub fn parse(bytes: &[u8]) -> Result<Bmap, BmapError> {
    let text = std::str::from_utf8(bytes).map_err(|_| err("not UTF-8 text"))?;
    let xml = strip_comments(text)?;
    let open = xml
        .find("<bmap ")
        .ok_or_else(|| err("no <bmap version=...> element: not a bmap file"))?;
    let head = &xml[open..];
    let head = &head[..head.find('>').ok_or_else(|| err("<bmap is not closed"))?];
    let version = head
        .split("version=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .ok_or_else(|| err("<bmap> has no version attribute"))?;
    let major = version.split('.').next().unwrap_or("");
    if major != "1" && major != "2" {
        return Err(err(format!(
            "bmap format version {version} is not supported (1.x and 2.x are)"
        )));
    }
    // Version 1.x without a checksum type used sha1; we only check sha256.
    let ctype = match element(&xml, "ChecksumType") {
        Ok(t) => t.to_string(),
        Err(_) => "sha1".to_string(),
    };
    let sha256 = match ctype.as_str() {
        "sha256" => true,
        _ => {
            return Err(err(format!(
            "checksum type {ctype} is not supported (recreate the bmap with bmaptool 3.x: sha256)"
        )))
        }
    };

    // The file checksum: hash of the file with its value replaced by zeros.
    let chk = element(&xml, "BmapFileChecksum")?;
    let want = hex32(chk, "<BmapFileChecksum>")?;
    let pos = text
        .find(&format!("{chk} </BmapFileChecksum>"))
        .or_else(|| text.find(chk))
        .ok_or_else(|| err("<BmapFileChecksum> not found in the raw text"))?;
    let mut zeroed = bytes.to_vec();
    zeroed[pos..pos + chk.len()].fill(b'0');
    if Sha256::digest(&zeroed)[..] != want[..] {
        return Err(err(
            "checksum mismatch: the file's <BmapFileChecksum> does not match its contents (edited or damaged)",
        ));
    }

    let image_size = number(&xml, "ImageSize")?;
    let block_size = number(&xml, "BlockSize")?;
    let blocks = number(&xml, "BlocksCount")?;
    if block_size == 0 || block_size % 512 != 0 {
        return Err(err(format!(
            "<BlockSize> {block_size} is not a positive multiple of 512"
        )));
    }
    if image_size == 0 {
        return Err(err("<ImageSize> is 0"));
    }
    if blocks != image_size.div_ceil(block_size) {
        return Err(err(format!(
            "<BlocksCount> {blocks} does not match <ImageSize> {image_size} / <BlockSize> {block_size}"
        )));
    }
    let mapped_blocks = number(&xml, "MappedBlocksCount")?;

    let map = element(&xml, "BlockMap")?;
    let mut ranges: Vec<Range> = Vec::new();
    let mut rest = map;
    let mut counted = 0u64;
    while let Some(i) = rest.find("<Range") {
        let r = &rest[i + "<Range".len()..];
        let gt = r.find('>').ok_or_else(|| err("<Range is not closed"))?;
        let attrs = &r[..gt];
        let body_end = r
            .find("</Range>")
            .ok_or_else(|| err("<Range> without </Range>"))?;
        if body_end < gt {
            return Err(err("malformed <Range>"));
        }
        let body = r[gt + 1..body_end].trim();
        rest = &r[body_end + "</Range>".len()..];

        let chksum = attrs
            .split("chksum=\"")
            .nth(1)
            .and_then(|v| v.split('"').next());
        let sum = match (chksum, sha256) {
            (Some(c), true) => Some(hex32(c, "<Range chksum>")?),
            _ => None,
        };
        let (first, last) = match body.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (body, body),
        };
        let parse_block = |s: &str| -> Result<u64, BmapError> {
            s.parse()
                .map_err(|_| err(format!("<Range> {body:?} is not BLOCK or FIRST-LAST")))
        };
        let (first, last) = (parse_block(first)?, parse_block(last)?);
        if last < first {
            return Err(err(format!("<Range> {body:?} ends before it starts")));
        }
        if last >= blocks {
            return Err(err(format!(
                "<Range> {body:?} goes past the image's {blocks} blocks"
            )));
        }
        if let Some(prev) = ranges.last() {
            if first * block_size < prev.end {
                return Err(err(format!(
                    "<Range> {body:?} overlaps or precedes the range before it"
                )));
            }
        }
        counted += last - first + 1;
        ranges.push(Range {
            start: first * block_size,
            end: ((last + 1) * block_size).min(image_size),
            sha256: sum,
        });
    }
    if !rest.trim().is_empty() {
        return Err(err(format!(
            "unexpected text in <BlockMap>: {:?}",
            rest.trim().chars().take(40).collect::<String>()
        )));
    }
    if counted != mapped_blocks {
        return Err(err(format!(
            "the ranges cover {counted} blocks, <MappedBlocksCount> says {mapped_blocks}"
        )));
    }
    Ok(Bmap {
        image_size,
        block_size,
        ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    /// A bmap written by our own artifact code for a small sparse image.
    fn real_bmap() -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("a.img");
        let f = File::create(&img).expect("create");
        f.set_len((8 << 20) + 1000).expect("size");
        f.write_all_at(&[7u8; 5000], 4096 * 3).expect("write");
        f.write_all_at(&[9u8; 1000], 8 << 20).expect("write tail");
        let zst = dir.path().join("a.img.zst");
        let bmap = dir.path().join("a.img.bmap");
        crate::artifacts::digest_and_compress(&img, &zst, &bmap).expect("artifacts");
        (
            std::fs::read(&bmap).expect("read bmap"),
            std::fs::read(&img).expect("read img"),
        )
    }

    #[test]
    fn reads_our_own_bmap_and_its_hashes_match_the_image() {
        let (bytes, img) = real_bmap();
        let b = parse(&bytes).expect("parse");
        assert_eq!(b.image_size, img.len() as u64);
        assert_eq!(b.block_size, 4096);
        assert_eq!(
            b.ranges
                .iter()
                .map(|r| (r.start, r.end))
                .collect::<Vec<_>>(),
            vec![(4096 * 3, 4096 * 5), (8 << 20, (8 << 20) + 1000)]
        );
        for r in &b.ranges {
            let data = &img[r.start as usize..r.end as usize];
            assert_eq!(Some(Sha256::digest(data).into()), r.sha256);
        }
        assert_eq!(b.mapped_bytes(), 8192 + 1000);
    }

    fn expect_err(bytes: &[u8], needle: &str) {
        match parse(bytes) {
            Ok(b) => panic!("accepted malformed bmap ({needle}): {b:?}"),
            Err(e) => assert!(e.0.contains(needle), "{needle:?} not in {:?}", e.0),
        }
    }

    /// Replaces `from` with `to` and recomputes the file checksum, so the
    /// edit reaches the structural checks.
    fn edit(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
        assert!(text.contains(from), "{from:?} not in bmap");
        let text = text.replacen(from, to, 1);
        let tag = "<BmapFileChecksum> ";
        let i = text.find(tag).expect("checksum tag") + tag.len();
        let mut z = text.clone().into_bytes();
        z[i..i + 64].fill(b'0');
        let sum = hex::encode(Sha256::digest(&z));
        let mut out = text.into_bytes();
        out[i..i + 64].copy_from_slice(sum.as_bytes());
        out
    }

    #[test]
    fn rejects_malformed_input() {
        let (good, _) = real_bmap();
        let text = String::from_utf8(good.clone()).expect("utf-8");
        expect_err(b"", "not a bmap");
        expect_err(b"\xff\xfe", "UTF-8");
        expect_err(b"<bmap version=\"3.0\">", "not supported");
        expect_err(&good[..good.len() - 30], "checksum mismatch");
        expect_err(
            text.replacen("<BlockSize> 4096 ", "<BlockSize> 4097 ", 1)
                .as_bytes(),
            "checksum mismatch",
        );
        expect_err(
            &edit(&good, "<BlockSize> 4096 ", "<BlockSize> 1000 "),
            "512",
        );
        expect_err(
            &edit(&good, "<ImageSize> ", "<ImageSize> x"),
            "not a whole number",
        );
        expect_err(
            &edit(&good, "</Range>", " </Range>\n<Range> 3 </Range>"),
            "overlaps or precedes",
        );
        expect_err(&edit(&good, "> 3-4 <", "> 4-3 <"), "ends before");
        expect_err(&edit(&good, "> 3-4 <", "> 3-99999 <"), "past the image");
        expect_err(&edit(&good, "> 3-4 <", "> 3-5 <"), "MappedBlocksCount");
        expect_err(&edit(&good, "> 3-4 <", "> x <"), "not BLOCK");
        expect_err(
            &edit(&good, "<ChecksumType> sha256", "<ChecksumType> md5"),
            "md5",
        );
        expect_err(&edit(&good, "chksum=\"", "chksum=\"zz"), "64 hex");
        expect_err(&edit(&good, "</BlockMap>", "junk</BlockMap>"), "unexpected");
        expect_err(b"<!-- never closed <bmap version=\"2.0\">", "unterminated");
    }

    #[test]
    fn rejects_overlapping_ranges() {
        let (good, _) = real_bmap();
        let text = String::from_utf8(good.clone()).expect("utf-8");
        let second = text
            .lines()
            .filter(|l| l.contains("<Range"))
            .nth(1)
            .expect("second range")
            .to_string();
        // Put the second range first: out of order.
        let first = text
            .lines()
            .find(|l| l.contains("<Range"))
            .expect("first range")
            .to_string();
        let swapped = text
            .replacen(&first, "@@FIRST@@", 1)
            .replacen(&second, &first, 1)
            .replacen("@@FIRST@@", &second, 1);
        let swapped = edit(swapped.as_bytes(), "<BlockMap>", "<BlockMap>");
        expect_err(&swapped, "overlaps or precedes");
    }
}
