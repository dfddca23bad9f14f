// SPDX-License-Identifier: Apache-2.0
//! One SPDX 2.3 JSON document per image: every Debian package in it, with
//! version, the .deb's sha256 and a purl. Deterministic: the namespace is
//! the image's manifest digest, the date the image's own.

use serde_json::{json, Value};

use super::recipe::{Pin, PypiSpec, WheelPin};

fn spdx_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

pub fn document(
    reference: &str,
    manifest: &str,
    created: &str,
    mirror: &str,
    pins: &[&Pin],
    wheels: &[(&PypiSpec, &WheelPin)],
) -> Value {
    let image_id = "SPDXRef-Image".to_string();
    let mut packages = vec![json!({
        "name": reference,
        "SPDXID": image_id,
        "versionInfo": manifest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
    })];
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    for p in pins {
        let id = format!("SPDXRef-Package-{}", spdx_id(&p.package));
        packages.push(json!({
            "name": p.package,
            "SPDXID": id,
            "versionInfo": p.version,
            "supplier": "Organization: Debian",
            "downloadLocation": format!("{mirror}/{}", p.filename),
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:deb/debian/{}@{}?arch={}", p.package, p.version, p.arch),
            }],
        }));
        rels.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    for (spec, w) in wheels {
        let id = format!("SPDXRef-Wheel-{}", spdx_id(&spec.project));
        packages.push(json!({
            "name": spec.project,
            "SPDXID": id,
            "versionInfo": spec.version,
            "downloadLocation": w.url,
            "packageFileName": w.filename,
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": w.sha256}],
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:pypi/{}@{}", spec.project, spec.version),
            }],
        }));
        rels.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": reference,
        "documentNamespace": format!("https://homecloud.invalid/spdx/{}", manifest.trim_start_matches("sha256:")),
        "creationInfo": {"created": created, "creators": [concat!("Tool: hc-image-", env!("CARGO_PKG_VERSION"))]},
        "packages": packages,
        "relationships": rels,
    })
}
