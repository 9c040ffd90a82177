//! Container images an image carries (`[[image]]` in `artifacts.toml`):
//! each built from its own profile with `Format=oci`, by the same pipeline
//! and cache as any build, before the image that installs its archive.
//! The worker's pod sandbox (`profiles/pause`) is one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use super::{build_inner, BuildOptions};
use crate::artifacts;
use crate::profile::ResolveOptions;

/// An image built for the one being built.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: artifacts::Image,
    /// Its OCI archive (in the cache's `images/NAME/`).
    pub archive: PathBuf,
    pub sha256: String,
}

/// The options of the build of `image` (its profile relative to
/// `lock_dir`) at `version`, the carrying build's pins and cache, its
/// output in `cache_dir/images/NAME/`.
fn sub_build(
    image: &artifacts::Image,
    lock_dir: &Path,
    version: &str,
    options: &BuildOptions,
    cache_dir: &Path,
) -> BuildOptions {
    BuildOptions {
        resolve: ResolveOptions {
            directory: lock_dir.join(&image.profile),
            role: None,
            profiles: Vec::new(),
            image_version: Some(version.to_owned()),
            ..options.resolve.clone()
        },
        format: Some("oci".to_owned()),
        compression: None,
        output_dir: Some(cache_dir.join("images").join(&image.name)),
        cache_dir: Some(cache_dir.to_owned()),
        artifacts: None,
        force: options.force,
        work_tree: options.work_tree,
        progress: options.progress.clone(),
        source_root: options.source_root.clone(),
    }
}

fn describe(image: &artifacts::Image, lock_dir: &Path) -> String {
    format!(
        "image {:?} (profile {})",
        image.name,
        lock_dir.join(&image.profile).display()
    )
}

/// Checks every image of `images` before anything is built: its profile
/// resolves, and its own lock file (artifacts.toml next to or above its
/// profile) carries no images (an image that carried itself would never
/// end). The builds themselves run beside the carrying image's package
/// stage, so a mistake here would otherwise show only after it.
pub fn check(
    images: &[artifacts::Image],
    lock_dir: &Path,
    version: &str,
    options: &BuildOptions,
    cache_dir: &Path,
) -> anyhow::Result<()> {
    for image in images {
        let what = || describe(image, lock_dir);
        let sub = sub_build(image, lock_dir, version, options, cache_dir);
        if let Some(lock) = &artifacts::discover(&sub.resolve.directory) {
            if !artifacts::load(lock, None)
                .with_context(what)?
                .images
                .is_empty()
            {
                bail!(
                    "{}: its lock file {} lists images too (give the profile an artifacts.toml of its own)",
                    what(),
                    lock.display()
                );
            }
        }
        crate::profile::resolve(&sub.resolve).with_context(what)?;
    }
    Ok(())
}

/// Builds every image of `images` (checked by [`check`]) at `version` (the
/// carrying image's: its configuration can name them) with the build's
/// pins and cache; their outputs go to `cache_dir/images/NAME/`.
pub fn build(
    images: &[artifacts::Image],
    lock_dir: &Path,
    version: &str,
    options: &BuildOptions,
    cache_dir: &Path,
) -> anyhow::Result<Vec<Built>> {
    let mut out = Vec::new();
    for image in images {
        let what = || describe(image, lock_dir);
        let sub = sub_build(image, lock_dir, version, options, cache_dir);
        let report = build_inner(&sub, true).with_context(what)?;
        let archive = report
            .outputs
            .iter()
            .find(|p| p.to_string_lossy().ends_with(".oci.tar"))
            .with_context(|| format!("{}: no OCI archive among {:?}", what(), report.outputs))?
            .clone();
        let sha256 = crate::digest::file(&archive).with_context(what)?;
        out.push(Built {
            image: image.clone(),
            archive,
            sha256,
        });
    }
    Ok(out)
}

/// Installs each image's archive into `tree` (0644).
pub fn install(built: &[Built], tree: &Path) -> anyhow::Result<()> {
    for b in built {
        let bytes = std::fs::read(&b.archive)
            .with_context(|| format!("reading {}", b.archive.display()))?;
        if crate::digest::bytes(&bytes) != b.sha256 {
            bail!(
                "image {:?} changed on disk after it was built",
                b.image.name
            );
        }
        crate::overlay::write_file(tree, &b.image.install, &bytes, 0o644)
            .with_context(|| format!("installing image {:?}", b.image.name))?;
    }
    Ok(())
}
