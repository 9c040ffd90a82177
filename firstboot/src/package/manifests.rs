//! A package's Kubernetes objects (`manifests`): applied with `kubectl
//! apply` once the package's health checks pass, as a short-lived
//! administrator made on this node (`globular kubeconfig`; control planes
//! only, which hold Kubernetes' CA). What the control plane's own
//! components need from RBAC and Kubernetes does not bind by default: the
//! apiserver's kubelet client may use the kubelets' API.
//!
//! Each object is written to `packages/NAME/manifests/OBJECT.yaml` (0600)
//! and applied on every run; a run reports it only when kubectl created or
//! changed it.

use std::path::Path;

use anyhow::Context as _;
use globular_cluster::fsutil;
use globular_task::Task;

use super::render::Facts;
use super::spec::Spec;
use super::Change;
use crate::layout::Layout;

/// How long the administrator certificate of a run lives.
const ADMIN_TTL: time::Duration = time::Duration::minutes(10);

/// Applies the spec's objects; the ones kubectl created or changed.
pub(super) fn apply(
    layout: &Layout,
    spec: &Spec,
    facts: &Facts,
    dir: &Path,
) -> anyhow::Result<Vec<Change>> {
    let Some(manifests) = &spec.manifests else {
        return Ok(Vec::new());
    };
    let server = facts.render(&manifests.server, "manifests.server")?;
    let files = dir.join("manifests");
    fsutil::create_private_dir(&files).with_context(|| format!("creating {}", files.display()))?;
    let admin = files.join(".admin.kubeconfig");
    let text = crate::kubeconfig::admin(layout, ADMIN_TTL, Some(server))?;
    fsutil::write_atomic(&admin, text.as_bytes(), fsutil::SECRET)
        .with_context(|| format!("writing {}", admin.display()))?;
    let result = apply_all(manifests, facts, &files, &admin);
    let _ = std::fs::remove_file(&admin);
    result
}

fn apply_all(
    manifests: &super::spec::Manifests,
    facts: &Facts,
    files: &Path,
    admin: &Path,
) -> anyhow::Result<Vec<Change>> {
    let mut changes = Vec::new();
    for (i, object) in manifests.objects.iter().enumerate() {
        let content = facts.render(&object.content, &format!("manifests.objects[{i}].content"))?;
        let path = files.join(format!("{}.yaml", object.name));
        fsutil::write_atomic(&path, content.as_bytes(), fsutil::SECRET)
            .with_context(|| format!("writing {}", path.display()))?;
        let out = Task::new(format!("applying {}", path.display()), "kubectl")
            .arg("--kubeconfig")
            .arg(admin)
            .arg("--cache-dir")
            .arg(files.join(".cache"))
            .args(["apply", "-f"])
            .arg(&path)
            .read_string()?;
        if out.contains(" created") || out.contains(" configured") {
            changes.push(Change::Manifest {
                name: object.name.clone(),
            });
        }
    }
    Ok(changes)
}
