//! Registry names as DNS names.
//!
//! Node names are DNS labels already (the seed checks them). Service names
//! (`kubernetes.KubernetesService`) and instance ids are free-form, so each
//! becomes one label: ASCII lowercased, every run of characters other than
//! `a-z`, `0-9` and `-` (dots included) replaced by one `-`, leading and
//! trailing `-` dropped, cut to 63 bytes. `kubernetes.KubernetesService`
//! becomes `kubernetes-kubernetesservice`, `globular.SubstrateApi`
//! `globular-substrateapi`. A name with nothing left gets no DNS name.

use globular_cluster::registry::ServiceRecord;

/// The longest DNS label.
const MAX_LABEL: usize = 63;

/// `name` as one DNS label, if anything of it is left.
pub fn label(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len().min(MAX_LABEL));
    let mut dash = false;
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c);
        } else {
            dash = true;
        }
        if out.len() >= MAX_LABEL {
            break;
        }
    }
    out.truncate(MAX_LABEL);
    let out = out.trim_end_matches('-').to_owned();
    (!out.is_empty()).then_some(out)
}

/// The SRV protocol label of a service: `_udp` for `udp`, `_tcp` for
/// anything else (`https`, `grpc`, empty: they all run on TCP).
pub fn protocol_label(service: &ServiceRecord) -> &'static str {
    if service.protocol.eq_ignore_ascii_case("udp") {
        "_udp"
    } else {
        "_tcp"
    }
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn service_names_become_one_label() {
        assert_eq!(
            label("kubernetes.KubernetesService").as_deref(),
            Some("kubernetes-kubernetesservice")
        );
        assert_eq!(
            label("globular.SubstrateApi").as_deref(),
            Some("globular-substrateapi")
        );
        assert_eq!(label("a..b__c").as_deref(), Some("a-b-c"));
        assert_eq!(label("--x--").as_deref(), Some("x"));
        assert_eq!(label("_.-"), None);
        assert_eq!(label("ünï"), Some("n".into()));
        let long = label(&"a.".repeat(100)).unwrap();
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
    }
}
