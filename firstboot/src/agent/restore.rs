//! A cluster restored from a backup (docs/backup.md): the first control
//! plane of a new cluster, seeded by `builder seed --restore-from`, starts
//! etcd from the backup's snapshot instead of an empty one. The cluster's
//! id, CA, tokens, registry and Kubernetes' objects come back; the records
//! of machines that are gone are dropped, and the other nodes join with
//! their usual seeds.

use anyhow::{bail, Context as _};
use base64::Engine as _;
use globular_cluster::backup::{self, SNAPSHOT};
use globular_cluster::fsutil::{self, AtomicFile, SECRET};
use globular_cluster::registry::{self, ClusterRecord, ServiceRecord};
use globular_cluster::seed::{Restore, Seed};

use super::Agent;
use crate::datasource::Datasource;

/// Most keys one etcd transaction changes (etcd refuses more than 128).
const TXN_OPS: usize = 100;

impl Agent {
    /// Copies the snapshot that came with the seed into the state
    /// directory and checks it against the backup's manifest, signed by the
    /// cluster CA; a snapshot that does not match is removed again.
    pub(super) fn take_snapshot(
        &self,
        seed: &Seed,
        restore: &Restore,
        source: &dyn Datasource,
    ) -> anyhow::Result<()> {
        let path = self.layout.restore_snapshot();
        if let Some(dir) = path.parent() {
            fsutil::create_private_dir(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = AtomicFile::create(&path, SECRET)
            .with_context(|| format!("creating {}", path.display()))?;
        if !source.fetch_file(&restore.snapshot, &mut file)? {
            bail!(
                "the seed from {} restores a backup, but its snapshot {} is not beside it",
                source.name(),
                restore.snapshot
            );
        }
        file.commit()
            .with_context(|| format!("writing {}", path.display()))?;
        let ca = seed.ca.as_ref().context("a restore seed needs the CA")?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(restore.signature.trim())
            .context("field `restore.signature`: not base64")?;
        match backup::check_part(
            restore.manifest.as_bytes(),
            &signature,
            &ca.certificate,
            SNAPSHOT,
            &path,
        ) {
            Ok(manifest) => {
                tracing::info!(
                    "restoring backup {} of {} (etcd revision {}, {} keys)",
                    manifest.name,
                    manifest.created,
                    manifest.etcd.revision,
                    manifest.etcd.total_keys
                );
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e).context(format!(
                    "the snapshot {} from {}",
                    restore.snapshot,
                    source.name()
                ))
            }
        }
    }

    /// etcd's data directory from the snapshot: a one-member cluster of
    /// this node, with every key and revision of the backup.
    pub(super) fn etcd_restored(&self, seed: &Seed) -> anyhow::Result<()> {
        let data = self.layout.etcd_data();
        if data.join("member").exists() {
            tracing::info!("etcd's data directory exists; the snapshot was restored before");
            return Ok(());
        }
        std::fs::create_dir_all(self.layout.etcd_dir()).context("creating the etcd directory")?;
        // etcdutl restores into a new directory: into a staging one, then
        // renamed, so an interrupted restore leaves no half data directory.
        let staging = self.layout.etcd_dir().join("data.restoring");
        for dir in [&staging, &data] {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
            }
        }
        crate::backup::restore_snapshot(
            &self.layout.restore_snapshot(),
            &staging,
            &seed.node.name,
            &Self::peer_url(seed),
            &seed.cluster.id,
        )?;
        std::fs::rename(&staging, &data)
            .with_context(|| format!("renaming {} to {}", staging.display(), data.display()))
    }

    /// The restored registry made this cluster's: its record checked, the
    /// nodes that are gone dropped (records, addresses, services), this
    /// node's record and addresses written, the seed's tokens added where
    /// missing. Then the snapshot is removed.
    pub(super) async fn cluster_restored(&self, seed: &Seed) -> anyhow::Result<()> {
        let etcd = self.local_etcd(seed, &[])?;
        let (value, _) = etcd
            .get(&registry::cluster_key())
            .await?
            .context("the restored etcd has no cluster record")?;
        let record: ClusterRecord =
            serde_json::from_slice(&value).context("the restored cluster record")?;
        if record.id != seed.cluster.id {
            bail!(
                "the restored data belongs to cluster {} ({}), this seed to {}",
                record.name,
                record.id,
                seed.cluster.id
            );
        }
        let me = seed.node.name.as_str();
        let own_node = registry::node_key(me);
        let own_ips = seed.ips();
        let mut gone = Vec::new();
        for (key, _) in etcd.list(&registry::nodes_prefix()).await? {
            if key != own_node {
                gone.push(key);
            }
        }
        for (key, owner) in etcd.list(&registry::addresses_prefix()).await? {
            let ip = key.strip_prefix(&registry::addresses_prefix());
            let mine = owner == me.as_bytes()
                && ip.is_some_and(|ip| own_ips.iter().any(|own| own.to_string() == ip));
            if !mine {
                gone.push(key);
            }
        }
        for (key, value) in etcd.list(&registry::services_prefix()).await? {
            let node = serde_json::from_slice::<ServiceRecord>(&value).map(|r| r.node);
            if node.as_deref().ok() != Some(me) {
                gone.push(key);
            }
        }
        tracing::info!(
            "dropping {} records of nodes that are not part of the restored cluster yet",
            gone.len()
        );
        for chunk in gone.chunks(TXN_OPS) {
            etcd.txn(&[], &[], chunk, &[]).await?;
        }
        let mut puts = vec![(own_node, serde_json::to_vec(&self.own_record(seed)?)?)];
        for ip in &own_ips {
            puts.push((registry::address_key(ip), me.as_bytes().to_vec()));
        }
        etcd.txn(&[], &puts, &[], &[]).await?;
        for token in &seed.tokens {
            etcd.create(&registry::token_key(&token.id), &serde_json::to_vec(token)?)
                .await?;
        }
        self.write_bootstrap_config(seed)?;
        let snapshot = self.layout.restore_snapshot();
        std::fs::remove_file(&snapshot)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .with_context(|| format!("removing {}", snapshot.display()))
    }
}
