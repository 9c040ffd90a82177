//! The cluster zone: every record the authority answers, built from one
//! consistent read of the registry (cluster record, address index, service
//! records at one etcd revision).
//!
//! | name | records |
//! |---|---|
//! | `<zone>` | SOA (primary: the first name server by name), NS (every node with a substrate API instance: the control planes, where the authority runs) |
//! | `<node>.<zone>` | A/AAAA: the node's addresses (`/globular/addresses/`) |
//! | `<service>.<zone>` | A/AAAA: every instance's address |
//! | `<instance>.<service>.<zone>` | A/AAAA: that instance's address (the SRV target) |
//! | `_<service>._tcp.<zone>` (`_udp` for `protocol: udp`) | SRV: one per instance, port and target |
//!
//! `<service>` and `<instance>` are [`names::label`] of the service name and
//! instance id. A zone is immutable: the follower builds a new one for every
//! registry change and swaps it in whole.

use std::collections::HashMap;
use std::net::IpAddr;

use anyhow::Context as _;
use globular_cluster::registry::{self, ClusterRecord, ServiceRecord};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::names;
use super::nodes::{NodeNames, ZoneNode};

/// TTL of node and service records: the registry changes them at any time,
/// and answers follow within a second, so caches should not hold them long.
pub const RECORD_TTL: u32 = 5;
/// TTL of the apex SOA and NS records.
pub const APEX_TTL: u32 = 60;
/// How long a resolver may cache "no such name" (the SOA minimum, RFC 2308).
pub const NEGATIVE_TTL: u32 = 5;

/// What the registry holds, read at one revision.
#[derive(Debug, Clone)]
pub struct Registry {
    pub cluster: ClusterRecord,
    pub nodes: Vec<ZoneNode>,
    pub services: Vec<ServiceRecord>,
    /// The etcd revision of the read: the SOA serial.
    pub revision: i64,
}

/// The records of one name, by type.
#[derive(Debug, Default)]
pub(super) struct Entry {
    sets: Vec<RrSet>,
}

impl Entry {
    fn set_of(&mut self, rtype: RecordType) -> &mut RrSet {
        let i = match self.sets.iter().position(|s| s.rtype == rtype) {
            Some(i) => i,
            None => {
                self.sets.push(RrSet {
                    rtype,
                    records: Vec::new(),
                    additionals: Vec::new(),
                });
                self.sets.len() - 1
            }
        };
        &mut self.sets[i]
    }

    /// Adds `record` unless its set holds the same data already.
    pub(super) fn add(&mut self, record: Record) {
        let set = self.set_of(record.record_type());
        if !set.records.iter().any(|r| r.data() == record.data()) {
            set.records.push(record);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    pub(super) fn records(&self) -> impl Iterator<Item = &Record> {
        self.sets.iter().flat_map(|s| s.records.iter())
    }
}

#[derive(Debug)]
struct RrSet {
    rtype: RecordType,
    records: Vec<Record>,
    /// Addresses of the names these records point to (SRV targets, NS hosts).
    additionals: Vec<Record>,
}

/// What the zone says about a name and type.
#[derive(Debug, PartialEq)]
pub enum Lookup<'z> {
    /// The records, and the addresses of the names they point to.
    Answer {
        answers: &'z [Record],
        additionals: &'z [Record],
    },
    /// The name exists without records of this type (NOERROR, SOA in the
    /// authority section).
    NoData,
    /// No such name in the zone (NXDOMAIN, SOA in the authority section).
    NxDomain,
    /// Not in this zone: refused.
    NotInZone,
}

/// An immutable snapshot of the cluster zone.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    serial: u32,
    revision: i64,
    /// The SOA with the negative TTL, for the authority section.
    negative_soa: [Record; 1],
    /// `<node>.<zone>`, shared with the zone before and after this one.
    nodes: NodeNames,
    /// Every other name: the apex, services and their parents.
    names: HashMap<Name, Entry>,
}

impl Zone {
    /// The zone of `registry`. Records that cannot be named (a service name
    /// with no DNS-safe character left, an address that is no IP) are left
    /// out and logged.
    pub fn build(registry: &Registry) -> anyhow::Result<Zone> {
        let mut nodes = NodeNames::new(origin_of(&registry.cluster)?);
        for node in &registry.nodes {
            nodes.put(node);
        }
        Ok(Zone::assemble(nodes, &registry.services, registry.revision))
    }

    /// The zone of `nodes` (kept by the caller from one zone to the next)
    /// and the service instances, at `revision`. The name servers are the
    /// nodes of the substrate API's instances: the authority runs beside
    /// the API on every control plane.
    pub fn assemble<'a>(
        nodes: NodeNames,
        services: impl IntoIterator<Item = &'a ServiceRecord>,
        revision: i64,
    ) -> Zone {
        let origin = nodes.origin().clone();
        let mut zone = ZoneBuilder {
            origin: origin.clone(),
            names: HashMap::new(),
        };
        // An instance whose record says it is down is no answer (nor, for
        // the API, a name server: the authority runs in the same process).
        let mut services: Vec<&ServiceRecord> =
            services.into_iter().filter(|s| !s.failed()).collect();
        services.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        let mut control_planes: Vec<&str> = services
            .iter()
            .filter(|s| s.name == registry::API_SERVICE)
            .map(|s| s.node.as_str())
            .collect();
        for service in services {
            let Some(label) = names::label(&service.name) else {
                tracing::debug!("service {:?} has no DNS name", service.name);
                continue;
            };
            let Some(instance) = names::label(&service.id) else {
                tracing::debug!(
                    "instance {:?} of {:?} has no DNS name",
                    service.id,
                    service.name
                );
                continue;
            };
            let Ok(ip) = service.address.parse::<IpAddr>() else {
                tracing::debug!(
                    "instance {:?} of {:?}: address {:?} is no IP",
                    service.id,
                    service.name,
                    service.address
                );
                continue;
            };
            let (Ok(name), Ok(target), Ok(srv_name)) = (
                zone.child(&[&label]),
                zone.child(&[&instance, &label]),
                zone.child(&[&format!("_{label}"), names::protocol_label(service)]),
            ) else {
                continue;
            };
            // A node's name keeps the node's addresses.
            if !nodes.contains(&name) {
                zone.add(&name, address(&name, ip));
            }
            zone.add(&target, address(&target, ip));
            zone.add_srv(
                &srv_name,
                Record::from_rdata(
                    srv_name.clone(),
                    RECORD_TTL,
                    RData::SRV(SRV::new(0, 0, service.port, target.clone())),
                ),
                address(&target, ip),
            );
        }
        control_planes.sort_unstable();
        control_planes.dedup();
        let control_planes: Vec<Name> = control_planes
            .into_iter()
            .filter_map(|cp| nodes.name_of(cp))
            .collect();
        let serial = serial_of(revision);
        let primary = control_planes
            .first()
            .cloned()
            .unwrap_or_else(|| origin.clone());
        let soa = |ttl| {
            Record::from_rdata(
                origin.clone(),
                ttl,
                RData::SOA(SOA::new(
                    primary.clone(),
                    Name::from_ascii("hostmaster")
                        .and_then(|h| h.append_domain(&origin))
                        .unwrap_or_else(|_| origin.clone()),
                    serial,
                    60,
                    10,
                    3600,
                    NEGATIVE_TTL,
                )),
            )
        };
        zone.set(&origin, RecordType::SOA, vec![soa(APEX_TTL)], Vec::new());
        let ns_glue = control_planes
            .iter()
            .flat_map(|cp| nodes.addresses(cp))
            .collect();
        let ns = control_planes
            .iter()
            .map(|cp| Record::from_rdata(origin.clone(), APEX_TTL, RData::NS(NS(cp.clone()))))
            .collect();
        zone.set(&origin, RecordType::NS, ns, ns_glue);
        Zone {
            negative_soa: [soa(NEGATIVE_TTL)],
            serial,
            revision,
            names: zone.finish(),
            nodes,
            origin,
        }
    }

    /// The zone's name (fully qualified, with the trailing dot).
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The SOA serial: the registry revision the zone was read at (its low
    /// 32 bits; serial arithmetic, RFC 1982, handles the wrap).
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The etcd revision the zone was read at.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The SOA for the authority section of negative answers.
    pub fn negative_soa(&self) -> &[Record] {
        &self.negative_soa
    }

    /// What the zone says about `name` and `rtype`.
    pub fn lookup(&self, name: &Name, rtype: RecordType) -> Lookup<'_> {
        match self.entry(name) {
            Some(entry) => match entry.sets.iter().find(|s| s.rtype == rtype) {
                Some(set) => Lookup::Answer {
                    answers: &set.records,
                    additionals: &set.additionals,
                },
                None => Lookup::NoData,
            },
            None if self.origin.zone_of(name) => Lookup::NxDomain,
            None => Lookup::NotInZone,
        }
    }

    /// Whether `name` exists in the zone (with records or as the parent of
    /// names that have some).
    pub fn contains(&self, name: &Name) -> bool {
        self.entry(name).is_some()
    }

    /// A node's name is the node's (a service of the same name only adds
    /// its instances below it).
    fn entry(&self, name: &Name) -> Option<&Entry> {
        self.nodes.get(name).or_else(|| self.names.get(name))
    }

    /// Every record, the SOA first, then by name and type: the zone in
    /// master-file form, one record per line (RFC 1035 section 5).
    pub fn records(&self) -> Vec<&Record> {
        let mut out: Vec<&Record> = self
            .nodes
            .entries()
            .chain(self.names.values())
            .flat_map(Entry::records)
            .collect();
        out.sort_by(|a, b| {
            let soa = |r: &Record| r.record_type() != RecordType::SOA;
            (
                soa(a),
                a.name(),
                u16::from(a.record_type()),
                a.data().to_string(),
            )
                .cmp(&(
                    soa(b),
                    b.name(),
                    u16::from(b.record_type()),
                    b.data().to_string(),
                ))
        });
        out
    }

    /// [`Zone::records`] as master-file text.
    pub fn to_master_file(&self) -> String {
        let mut text = format!("$ORIGIN {}\n", self.origin);
        for record in self.records() {
            text.push_str(&record.to_string());
            text.push('\n');
        }
        text
    }
}

/// The zone while it is built. Every name is made by [`ZoneBuilder::child`],
/// so it is under the origin. Records are added in registry order, so equal
/// registries give equal zones.
struct ZoneBuilder {
    origin: Name,
    names: HashMap<Name, Entry>,
}

impl ZoneBuilder {
    /// `labels` (innermost first) under the origin.
    fn child(&self, labels: &[&str]) -> anyhow::Result<Name> {
        let mut name = self.origin.clone();
        for label in labels.iter().rev() {
            name = Name::from_labels([label.as_bytes()])?.append_domain(&name)?;
        }
        Ok(name)
    }

    fn set_of(&mut self, name: &Name, rtype: RecordType) -> &mut RrSet {
        self.names.entry(name.clone()).or_default().set_of(rtype)
    }

    /// Adds `record` unless the set holds the same data already.
    fn add(&mut self, name: &Name, record: Record) {
        self.names.entry(name.clone()).or_default().add(record);
    }

    fn add_srv(&mut self, name: &Name, srv: Record, glue: Record) {
        let set = self.set_of(name, RecordType::SRV);
        set.records.push(srv);
        if !set.additionals.contains(&glue) {
            set.additionals.push(glue);
        }
    }

    fn set(&mut self, name: &Name, rtype: RecordType, records: Vec<Record>, glue: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let set = self.set_of(name, rtype);
        set.records = records;
        set.additionals = glue;
    }

    /// The names with their parents up to the origin (empty non-terminals
    /// exist: `_tcp.<zone>` answers NODATA, not NXDOMAIN).
    fn finish(self) -> HashMap<Name, Entry> {
        let apex = self.origin.num_labels();
        let mut out: HashMap<Name, Entry> = HashMap::with_capacity(self.names.len() + 1);
        let mut parents = Vec::new();
        for (name, entry) in self.names {
            // Names one label below the origin (nodes, services) have no
            // parent but the origin.
            let mut parent = name.clone();
            while parent.num_labels() > apex + 1 {
                parent = parent.base_name();
                parents.push(parent.clone());
            }
            out.insert(name, entry);
        }
        for parent in parents {
            out.entry(parent).or_default();
        }
        out.entry(self.origin).or_default();
        out
    }
}

pub(super) fn address(name: &Name, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), RECORD_TTL, rdata)
}

/// The zone's name, `<cluster>.<domain>.`.
pub fn origin_of(cluster: &ClusterRecord) -> anyhow::Result<Name> {
    Name::from_ascii(format!(
        "{}.",
        registry::zone_name(&cluster.name, &cluster.domain)
    ))
    .with_context(|| format!("zone name of cluster {:?}", cluster.name))
}

fn serial_of(revision: i64) -> u32 {
    // Truncation is the point: the serial is the revision modulo 2^32.
    (revision as u64 & 0xffff_ffff) as u32
}

/// A small registry for the module tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use globular_cluster::registry::EnrollmentPolicy;

    pub(crate) fn registry() -> Registry {
        let node = |name: &str, addresses: &[&str]| ZoneNode {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        };
        let service = |name: &str, id: &str, address: &str, port| ServiceRecord {
            name: name.into(),
            id: id.into(),
            node: id.into(),
            address: address.into(),
            port,
            protocol: "https".into(),
            tags: Vec::new(),
            metadata: Default::default(),
            registered_at: 0,
        };
        Registry {
            cluster: ClusterRecord {
                name: "prod".into(),
                id: "0".repeat(32),
                ca_cert_hash: String::new(),
                policy: EnrollmentPolicy::default(),
                domain: "globular.internal".into(),
                certificate_lifetime: globular_cluster::pki::default_lifetime_seconds(),
            },
            nodes: vec![
                node("cp1", &["10.0.0.1/24", "fd00::1/64"]),
                node("cp2", &["10.0.0.2/24"]),
                node("w1", &["10.0.0.21/24"]),
            ],
            services: vec![
                service("globular.SubstrateApi", "cp1", "10.0.0.1", 10016),
                service("globular.SubstrateApi", "cp2", "10.0.0.2", 10016),
                service("kubernetes.KubernetesService", "cp1", "fd00::1", 6443),
            ],
            revision: (1 << 32) + 42,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::registry;
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn every_record_kind_is_named_as_documented() {
        let zone = Zone::build(&registry()).unwrap();
        assert_eq!(zone.origin().to_string(), "prod.globular.internal.");
        assert_eq!(zone.serial(), 42);
        let text = zone.to_master_file();
        for line in [
            "prod.globular.internal. 60 IN SOA cp1.prod.globular.internal. hostmaster.prod.globular.internal. 42 60 10 3600 5",
            "prod.globular.internal. 60 IN NS cp1.prod.globular.internal.",
            "prod.globular.internal. 60 IN NS cp2.prod.globular.internal.",
            "cp1.prod.globular.internal. 5 IN A 10.0.0.1",
            "cp1.prod.globular.internal. 5 IN AAAA fd00::1",
            "w1.prod.globular.internal. 5 IN A 10.0.0.21",
            "globular-substrateapi.prod.globular.internal. 5 IN A 10.0.0.1",
            "globular-substrateapi.prod.globular.internal. 5 IN A 10.0.0.2",
            "cp2.globular-substrateapi.prod.globular.internal. 5 IN A 10.0.0.2",
            "_globular-substrateapi._tcp.prod.globular.internal. 5 IN SRV 0 0 10016 cp1.globular-substrateapi.prod.globular.internal.",
            "kubernetes-kubernetesservice.prod.globular.internal. 5 IN AAAA fd00::1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.lines().nth(1).unwrap().contains(" SOA "), "{text}");
    }

    #[test]
    fn an_instance_whose_record_says_failed_is_no_answer() {
        let mut registry = registry();
        registry.services[1]
            .metadata
            .insert("health".into(), "failed".into());
        registry.services[2]
            .metadata
            .insert("health".into(), "degraded".into());
        let text = Zone::build(&registry).unwrap().to_master_file();
        assert!(
            !text.contains("cp2.globular-substrateapi")
                && !text.contains("globular-substrateapi.prod.globular.internal. 5 IN A 10.0.0.2"),
            "cp2's failed API answers:\n{text}"
        );
        assert!(!text.contains("NS cp2."), "{text}");
        // The node keeps its name and address; degraded still answers.
        assert!(
            text.contains("cp2.prod.globular.internal. 5 IN A 10.0.0.2"),
            "{text}"
        );
        assert!(text.contains("kubernetes-kubernetesservice"), "{text}");
        assert!(text.contains("cp1.globular-substrateapi"), "{text}");
    }

    #[test]
    fn names_without_records_are_nodata_and_others_nxdomain() {
        let zone = Zone::build(&registry()).unwrap();
        assert_eq!(
            zone.lookup(&name("_tcp.prod.globular.internal."), RecordType::A),
            Lookup::NoData
        );
        assert_eq!(
            zone.lookup(&name("W1.Prod.globular.internal."), RecordType::MX),
            Lookup::NoData
        );
        assert_eq!(
            zone.lookup(&name("nope.prod.globular.internal."), RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            zone.lookup(&name("example.com."), RecordType::A),
            Lookup::NotInZone
        );
        assert_eq!(
            zone.lookup(&name("globular.internal."), RecordType::A),
            Lookup::NotInZone
        );
        match zone.lookup(&name("CP1.prod.globular.internal."), RecordType::A) {
            Lookup::Answer { answers, .. } => assert_eq!(answers.len(), 1),
            other => panic!("{other:?}"),
        }
        match zone.lookup(&name("prod.globular.internal."), RecordType::NS) {
            Lookup::Answer {
                answers,
                additionals,
            } => {
                assert_eq!(answers.len(), 2);
                assert_eq!(additionals.len(), 3);
            }
            other => panic!("{other:?}"),
        }
    }
}
