//! `Format=oci`: the tree as a one-layer OCI image, written as an OCI
//! image layout in a tar archive (an "oci-archive": what `ctr images
//! import`, `skopeo copy oci-archive:` and `podman load` read). mkosi
//! writes the same layout as a directory; an archive is one file to
//! checksum, publish and carry to an air-gapped node.
//!
//! Everything is derived from the tree and the build's inputs: the layer
//! is the builder's deterministic tar of the tree (compressed with gzip,
//! zstd or not at all), the configuration's dates are `SOURCE_DATE_EPOCH`,
//! and the archive's own entries are sorted with fixed owners and times,
//! so the same inputs give the same bytes.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{bail, Context as _};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::archive;

/// The media types of the layout's documents.
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// What names and describes the image.
#[derive(Debug, Clone)]
pub struct ImageRef<'a> {
    /// The image's name (`ImageId=`, else the output name).
    pub name: &'a str,
    /// Its tag (`ImageVersion=`).
    pub version: &'a str,
    /// The Debian architecture of the tree (`amd64`).
    pub dpkg_architecture: &'a str,
    /// The program a container runs when its pod gives none
    /// (`OciEntrypoint=`, a Globular extension); empty: none.
    pub entrypoint: &'a [String],
}

impl ImageRef<'_> {
    /// The name containerd gives the image on import
    /// (`io.containerd.image.name`): `localhost/NAME:VERSION`, a name no
    /// registry serves, so a node never tries to pull it.
    pub fn reference(&self) -> String {
        format!("localhost/{}:{}", self.name, self.version)
    }
}

/// Whether `name` is one path component of an image reference (the
/// distribution's grammar: lowercase letters and digits, single `.`, `_`
/// or `__`, and runs of `-` between them).
fn valid_component(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let chars: Vec<char> = name.chars().collect();
    if chars.is_empty() || !alnum(chars[0]) || !alnum(chars[chars.len() - 1]) {
        return false;
    }
    let mut run = String::new();
    for c in chars {
        if alnum(c) {
            let ok = run.is_empty()
                || run == "."
                || run == "_"
                || run == "__"
                || run.chars().all(|r| r == '-');
            if !ok {
                return false;
            }
            run.clear();
        } else if matches!(c, '.' | '_' | '-') {
            run.push(c);
        } else {
            return false;
        }
    }
    true
}

/// Whether `tag` is an image tag: a word character, then up to 127 word
/// characters, `.` or `-`.
fn valid_tag(tag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    chars.next().is_some_and(word)
        && tag.len() <= 128
        && chars.all(|c| word(c) || c == '.' || c == '-')
}

/// The reference is one containerd accepts, or an error naming the
/// setting to change (a bad name would only fail at a node's import).
fn check_reference(image: &ImageRef<'_>) -> anyhow::Result<()> {
    if !valid_component(image.name) {
        bail!(
            "ImageId={}: not an OCI image name (lowercase letters and digits, separated by one \
             '.', '_' or '__', or by dashes)",
            image.name
        );
    }
    if !valid_tag(image.version) {
        bail!(
            "ImageVersion={} (or --version): not an OCI image tag (letters, digits, '_', and \
             '.' or '-' after the first; at most 128)",
            image.version
        );
    }
    Ok(())
}

/// The OCI architecture (Go's `GOARCH`) of a Debian architecture.
fn oci_architecture(dpkg: &str) -> anyhow::Result<(&'static str, Option<&'static str>)> {
    Ok(match dpkg {
        "amd64" => ("amd64", None),
        "arm64" => ("arm64", Some("v8")),
        "armhf" => ("arm", Some("v7")),
        "i386" => ("386", None),
        "ppc64el" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => bail!("Architecture: no OCI architecture for the Debian architecture {other}"),
    })
}

/// The layer's media type for a compression.
fn layer_type(compression: &str) -> anyhow::Result<&'static str> {
    Ok(match compression {
        "gzip" => "application/vnd.oci.image.layer.v1.tar+gzip",
        "zstd" => "application/vnd.oci.image.layer.v1.tar+zstd",
        "none" => "application/vnd.oci.image.layer.v1.tar",
        other => bail!("unsupported layer compression {other}"),
    })
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.size)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A blob of the layout: its digest (hex) and size.
#[derive(Debug, Clone)]
struct Blob {
    sha256: String,
    size: u64,
}

impl Blob {
    fn of(bytes: &[u8]) -> Blob {
        Blob {
            sha256: crate::digest::bytes(bytes),
            size: bytes.len() as u64,
        }
    }

    fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({
            "mediaType": media_type,
            "digest": format!("sha256:{}", self.sha256),
            "size": self.size,
        })
    }
}

/// Writes `root` as an OCI archive to `dest`, its layer compressed with
/// `compression`; `work` holds the layer while it is written.
pub fn write(
    root: &Path,
    dest: &Path,
    work: &Path,
    compression: &str,
    epoch: u64,
    image: &ImageRef<'_>,
) -> anyhow::Result<()> {
    check_reference(image)?;
    let (architecture, variant) = oci_architecture(image.dpkg_architecture)?;
    let layer_media_type = layer_type(compression)?;

    // The layer, hashed compressed (its digest) and uncompressed (the
    // configuration's diff_id) in one pass.
    let layer_path = work.join("oci-layer");
    let file = std::fs::File::create(&layer_path)
        .with_context(|| format!("creating {}", layer_path.display()))?;
    let mut compressed = Hashing::new(io::BufWriter::new(file));
    let diff_id = {
        let mut compressor = archive::compressor(&mut compressed, compression)?;
        let mut plain = Hashing::new(&mut compressor);
        archive::tar_stream(root, &mut plain, epoch)?;
        let diff_id = plain.finish().1;
        compressor
            .finish_write()
            .with_context(|| format!("writing {}", layer_path.display()))?;
        diff_id
    };
    let (mut file, sha256, size) = compressed.finish();
    file.flush()
        .with_context(|| format!("writing {}", layer_path.display()))?;
    drop(file);
    let layer = Blob { sha256, size };

    let created = time::OffsetDateTime::from_unix_timestamp(epoch as i64)
        .context("SOURCE_DATE_EPOCH out of range")?
        .format(&time::format_description::well_known::Rfc3339)?;
    let mut config = json!({
        "created": created,
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": {
                "org.opencontainers.image.version": image.version,
                "org.opencontainers.image.title": image.name,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{
            "created": created,
            "created_by": format!("builder {} (Format=oci)", env!("CARGO_PKG_VERSION")),
        }],
    });
    if let Some(variant) = variant {
        config["variant"] = json!(variant);
    }
    if !image.entrypoint.is_empty() {
        config["config"]["Entrypoint"] = json!(image.entrypoint);
    }
    let config = serde_json::to_vec(&config)?;
    let config_blob = Blob::of(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config_blob.descriptor(CONFIG),
        "layers": [layer.descriptor(layer_media_type)],
    }))?;
    let manifest_blob = Blob::of(&manifest);
    let mut platform = json!({"architecture": architecture, "os": "linux"});
    if let Some(variant) = variant {
        platform["variant"] = json!(variant);
    }
    let mut entry = manifest_blob.descriptor(MANIFEST);
    entry["platform"] = platform;
    entry["annotations"] = json!({
        "org.opencontainers.image.ref.name": image.version,
        "io.containerd.image.name": image.reference(),
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [entry],
    }))?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;

    let file =
        std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut out = tar::Builder::new(io::BufWriter::new(file));
    let what = || format!("writing {}", dest.display());
    append(
        &mut out,
        "oci-layout",
        0o644,
        layout.len() as u64,
        &layout[..],
        epoch,
    )
    .with_context(what)?;
    append(
        &mut out,
        "index.json",
        0o644,
        index.len() as u64,
        &index[..],
        epoch,
    )
    .with_context(what)?;
    for dir in ["blobs/", "blobs/sha256/"] {
        append(&mut out, dir, 0o755, 0, io::empty(), epoch).with_context(what)?;
    }
    // Blobs in digest order.
    let mut blobs: Vec<(&Blob, Option<&[u8]>)> = vec![
        (&config_blob, Some(&config[..])),
        (&manifest_blob, Some(&manifest[..])),
        (&layer, None),
    ];
    blobs.sort_by(|a, b| a.0.sha256.cmp(&b.0.sha256));
    for (blob, bytes) in blobs {
        let name = format!("blobs/sha256/{}", blob.sha256);
        match bytes {
            Some(bytes) => append(&mut out, &name, 0o644, blob.size, bytes, epoch),
            None => {
                let file = std::fs::File::open(&layer_path)
                    .with_context(|| format!("reading {}", layer_path.display()))?;
                append(
                    &mut out,
                    &name,
                    0o644,
                    blob.size,
                    io::BufReader::new(file),
                    epoch,
                )
            }
        }
        .with_context(what)?;
    }
    out.into_inner()
        .and_then(|mut w| w.flush())
        .with_context(|| format!("writing {}", dest.display()))?;
    std::fs::remove_file(&layer_path)
        .with_context(|| format!("removing {}", layer_path.display()))?;
    Ok(())
}

/// Appends a file (or, for a name ending in `/`, a directory) owned by
/// root with a fixed time.
fn append<W: Write>(
    out: &mut tar::Builder<W>,
    name: &str,
    mode: u32,
    size: u64,
    data: impl io::Read,
    epoch: u64,
) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(epoch);
    h.set_entry_type(if name.ends_with('/') {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    out.append_data(&mut h, name, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_follow_the_distribution_grammar() {
        for ok in [
            "mini", "pause", "web-app", "a.b", "a_b", "a__b", "a---b", "x1",
        ] {
            assert!(valid_component(ok), "{ok}");
        }
        for bad in [
            "", "Mini", "-a", "a-", "a..b", "a._b", "a___b", "a b", "a/b", "a+b",
        ] {
            assert!(!valid_component(bad), "{bad}");
        }
        for ok in ["1.0", "0.1.0", "v1_2-rc.1", "latest"] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in ["", ".1", "-1", "1.0+git1", "a:b", &"x".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
        let image = |name, version| ImageRef {
            name,
            version,
            dpkg_architecture: "amd64",
            entrypoint: &[],
        };
        let err = check_reference(&image("Web", "1")).unwrap_err().to_string();
        assert!(err.starts_with("ImageId=Web: "), "{err}");
        let err = check_reference(&image("web", "1+x"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("ImageVersion=1+x "), "{err}");
        check_reference(&image("web", "1.0")).unwrap();
    }
}
