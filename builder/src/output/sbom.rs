//! An SPDX 2.3 JSON software bill of materials: the image, its distribution
//! packages (with purls), its pinned artifacts (with sha256), and its
//! components built from source with every Go module linked into them
//! (`pkg:golang` purls, go.sum hashes).

use serde_json::{json, Value};

use super::manifest::Manifest;

/// The SBOM for a manifest. Deterministic: the namespace comes from the inputs
/// digest and the creation time from SOURCE_DATE_EPOCH.
pub fn spdx(manifest: &Manifest) -> anyhow::Result<Value> {
    let image = &manifest.image;
    let created = time::OffsetDateTime::from_unix_timestamp(manifest.source_date_epoch as i64)?
        .format(&time::format_description::well_known::Rfc3339)?;
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": image.name,
        "versionInfo": image.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "checksums": manifest.outputs.iter().filter(|o| o.format != "directory").map(|o| json!({
            "algorithm": "SHA256",
            "checksumValue": o.sha256,
        })).collect::<Vec<_>>(),
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    let distro = format!("{}-{}", image.distribution, image.release);
    for (i, p) in manifest.packages.iter().enumerate() {
        let id = format!("SPDXRef-Package-{i}-{}", spdx_id(&p.name));
        packages.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "supplier": format!("Organization: {}", supplier(&image.distribution)),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "sourceInfo": format!("built from source package {}", p.source),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!(
                    "pkg:deb/{}/{}@{}?arch={}&distro={}",
                    image.distribution,
                    purl_escape(&p.name),
                    purl_escape(&p.version),
                    p.architecture,
                    distro
                ),
            }],
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    for (i, a) in manifest.artifacts.iter().enumerate() {
        let id = format!("SPDXRef-Artifact-{i}-{}", spdx_id(&a.name));
        let location = if a.source.starts_with("http") {
            a.source.clone()
        } else {
            "NOASSERTION".to_owned()
        };
        packages.push(json!({
            "SPDXID": id,
            "name": a.name,
            "downloadLocation": location,
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": a.sha256}],
            "comment": format!("installed at {}", a.install),
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    for (i, c) in manifest.components.iter().enumerate() {
        let id = format!("SPDXRef-Component-{i}-{}", spdx_id(&c.name));
        packages.push(json!({
            "SPDXID": id,
            "name": c.name,
            "versionInfo": c.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "sourceInfo": format!(
                "built with {} from {}@{} ({})",
                c.go_version, c.module, c.module_version, c.module_sum
            ),
            "externalRefs": [golang_ref(&c.module, &c.module_version)],
            "comment": c.binaries.iter().map(|b| format!("{} sha256:{}", b.install, b.sha256))
                .collect::<Vec<_>>().join(", "),
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
        for (j, m) in c.modules.iter().enumerate() {
            let module_id = format!("SPDXRef-GoModule-{i}-{j}-{}", spdx_id(&m.path));
            packages.push(json!({
                "SPDXID": module_id,
                "name": m.path,
                "versionInfo": m.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "sourceInfo": format!("go.sum {}", m.sum),
                "externalRefs": [golang_ref(&m.path, &m.version)],
            }));
            relationships.push(json!({
                "spdxElementId": id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": module_id,
            }));
        }
    }
    Ok(json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image.name,
        "documentNamespace": format!(
            "https://globular.invalid/spdx/{}-{}",
            image.name, manifest.inputs_digest
        ),
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: globular-builder-{}", manifest.builder_version)],
        },
        "packages": packages,
        "relationships": relationships,
    }))
}

fn supplier(distribution: &str) -> &str {
    match distribution {
        "debian" => "Debian",
        "ubuntu" => "Canonical",
        other => other,
    }
}

/// SPDX identifiers allow letters, digits, `.` and `-`.
fn spdx_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A `pkg:golang` purl reference: the module path's segments, each escaped.
fn golang_ref(module: &str, version: &str) -> Value {
    let path: Vec<String> = module.split('/').map(purl_escape).collect();
    json!({
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": format!("pkg:golang/{}@{}", path.join("/"), purl_escape(version)),
    })
}

fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(spdx_id("libstdc++6"), "libstdc--6");
        assert_eq!(purl_escape("1:2.3+b4"), "1%3A2.3%2Bb4");
        assert_eq!(
            golang_ref("go.etcd.io/etcd/server/v3", "v3.6.16")["referenceLocator"],
            "pkg:golang/go.etcd.io/etcd/server/v3@v3.6.16"
        );
    }
}
