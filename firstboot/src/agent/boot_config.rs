//! Per-boot configuration: what the seed says about the running system
//! (the systemd-networkd configuration, the transient hostname), applied on
//! every boot, enrolled or not.

use anyhow::Context as _;
use globular_cluster::registry;
use globular_cluster::seed::Seed;
use globular_cluster::Role;

use super::Agent;
use crate::services::Manager;

/// File name of the network configuration the agent writes.
pub const NETWORK_FILE: &str = "10-globular.network";

/// A systemd-networkd `.network` file for the seed's addresses, with the
/// cluster zone routed to the control planes' DNS authority: systemd-resolved
/// sends `<cluster>.<domain>` to them (`Domains=~zone`) and nothing else
/// (`DNSDefaultRoute=no`).
pub fn network_config(seed: &Seed) -> String {
    let mut text = format!(
        "# Written by globular firstboot from the seed of {}.\n[Match]\nType=ether\nName=en* eth*\n\n[Network]\n",
        seed.node.name
    );
    for address in &seed.node.addresses {
        text += &format!("Address={address}\n");
    }
    if let Some(gateway) = &seed.node.gateway {
        text += &format!("Gateway={gateway}\n");
    }
    let servers = dns_servers(seed);
    if !servers.is_empty() {
        for server in servers {
            text += &format!("DNS={server}\n");
        }
        let zone = registry::zone_name(&seed.cluster.name, &seed.cluster.domain);
        text += &format!("Domains=~{zone}\nDNSDefaultRoute=no\n");
    }
    text
}

/// The control planes' addresses the seed knows: this node's first address
/// on a control plane, then the IPs of the join endpoints.
fn dns_servers(seed: &Seed) -> Vec<std::net::IpAddr> {
    let own = (seed.node.role == Role::ControlPlane)
        .then(|| seed.node.addresses.first())
        .flatten()
        .and_then(|a| a.split('/').next()?.parse().ok());
    let endpoints = seed
        .cluster
        .endpoints
        .iter()
        .filter_map(|e| e.parse::<std::net::SocketAddr>().ok())
        .map(|e| e.ip());
    let mut servers = Vec::new();
    for ip in own.into_iter().chain(endpoints) {
        if !servers.contains(&ip) {
            servers.push(ip);
        }
    }
    servers
}

impl Agent {
    /// What the seed says about the running system, applied on every run
    /// (every boot): `/etc` is read-only and `/run` starts empty. Both are
    /// left as they are when they already say the same.
    pub(super) fn apply_boot_config(&self, seed: &Seed) -> anyhow::Result<()> {
        self.network(seed)?;
        self.hostname(seed)
    }

    /// The seed's addresses and gateway as a systemd-networkd configuration
    /// for the node's Ethernet links, then `networkctl reload` (with systemd)
    /// if the file changed.
    pub(super) fn network(&self, seed: &Seed) -> anyhow::Result<()> {
        let Some(dir) = &self.opts.network_dir else {
            return Ok(());
        };
        let path = dir.join(NETWORK_FILE);
        let config = network_config(seed);
        if std::fs::read_to_string(&path).is_ok_and(|old| old == config) {
            tracing::debug!("{} is up to date", path.display());
            return Ok(());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        self.write_public(&path, &config)?;
        tracing::info!("network configuration written to {}", path.display());
        if self.opts.services == Manager::Systemd {
            globular_task::Task::new("applying the network configuration", "networkctl")
                .package("systemd")
                .arg("reload")
                .run()?;
        }
        Ok(())
    }

    /// The node name as the transient hostname (the kernel's; the static
    /// one in `/etc/hostname` is the image's and read-only).
    pub(super) fn hostname(&self, seed: &Seed) -> anyhow::Result<()> {
        let Some(path) = &self.opts.hostname_file else {
            return Ok(());
        };
        let name = &seed.node.name;
        if std::fs::read_to_string(path).is_ok_and(|old| old.trim_end() == name) {
            return Ok(());
        }
        // procfs: written in place, no temporary file.
        std::fs::write(path, format!("{name}\n"))
            .with_context(|| format!("setting the hostname: writing {}", path.display()))?;
        tracing::info!("hostname set to {name}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Step;

    #[test]
    fn network_config_from_seed() {
        let yaml = "version: 1
cluster:
  name: demo
  id: 0123456789abcdef0123456789abcdef
  ca_cert_hash: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  endpoints: [10.0.0.1:10016]
node:
  name: w1
  role: worker
  addresses: [10.0.0.5/24, fd00::5/64]
  gateway: 10.0.0.254
token: abcdef.0123456789abcdef
";
        let seed = Seed::parse(yaml, "test").unwrap();
        let text = network_config(&seed);
        assert!(
            text.contains("[Match]\nType=ether\nName=en* eth*\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "[Network]\nAddress=10.0.0.5/24\nAddress=fd00::5/64\nGateway=10.0.0.254\n\
                 DNS=10.0.0.1\nDomains=~demo.globular.internal\nDNSDefaultRoute=no\n"
            ),
            "{text}"
        );
        assert_eq!(
            Step::plan(&seed),
            [Step::Seed, Step::Key, Step::NodeCert, Step::Enrolled]
        );
    }
}
