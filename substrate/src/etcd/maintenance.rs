//! etcd's alarms and the space they guard: a member whose backend reached
//! its quota raises `NOSPACE` and the cluster takes no more writes until
//! the history is compacted, the backends defragmented and the alarm
//! disarmed ([`Etcd::recover_space`], the health loop's correction).

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use serde_json::{json, Value};

use super::{int, uint, Etcd, Failure};

/// How long one member's defragmentation may take (it copies the backend).
const DEFRAG_TIMEOUT: Duration = Duration::from_secs(120);

/// An alarm a member raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    pub member: u64,
    /// `NOSPACE` or `CORRUPT`, as etcd names them.
    pub kind: String,
}

/// What [`Etcd::recover_space`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceRecovery {
    /// The revision the history was compacted to.
    pub compacted_to: i64,
    /// The endpoints whose backends were defragmented.
    pub defragmented: Vec<String>,
    /// The `NOSPACE` alarms disarmed.
    pub disarmed: Vec<Alarm>,
}

impl Etcd {
    /// The cluster's active alarms.
    pub async fn alarms(&self) -> anyhow::Result<Vec<Alarm>> {
        let resp = self
            .call("/v3/maintenance/alarm", json!({"action": "GET"}))
            .await?;
        Ok(alarms_of(&resp))
    }

    /// Disarms one alarm.
    pub async fn disarm(&self, alarm: &Alarm) -> anyhow::Result<()> {
        self.call(
            "/v3/maintenance/alarm",
            json!({
                "action": "DEACTIVATE",
                "memberID": alarm.member.to_string(),
                "alarm": alarm.kind,
            }),
        )
        .await?;
        Ok(())
    }

    /// Compacts the history up to the current revision and defragments
    /// every endpoint's backend, then disarms the `NOSPACE` alarms: what
    /// etcd's operators guide prescribes once the quota is reached. Keys
    /// and their values are kept; only superseded revisions go.
    pub async fn recover_space(&self) -> anyhow::Result<SpaceRecovery> {
        let resp = self
            .call("/v3/kv/range", json!({"key": "AA==", "limit": "1"}))
            .await
            .context("reading the current revision")?;
        let revision = resp.get("header").map_or(0, |h| int(h, "revision"));
        if revision == 0 {
            return Err(anyhow!("etcd gave no revision: {resp}"));
        }
        match self
            .call(
                "/v3/kv/compaction",
                json!({"revision": revision.to_string(), "physical": true}),
            )
            .await
        {
            Ok(_) => {}
            // Compacted already (by etcd's own compactor, or a run before).
            Err(e) if format!("{e:#}").contains("required revision has been compacted") => {}
            Err(e) => return Err(e.context(format!("compacting to revision {revision}"))),
        }
        let mut defragmented = Vec::new();
        for ep in &self.endpoints {
            match self
                .call_endpoint(ep, "/v3/maintenance/defragment", &json!({}), DEFRAG_TIMEOUT)
                .await
            {
                Ok(_) => defragmented.push(ep.clone()),
                Err(Failure::Next(e) | Failure::Final(e)) => {
                    tracing::warn!("defragmenting {ep}: {e:#}");
                }
            }
        }
        let mut disarmed = Vec::new();
        for alarm in self.alarms().await? {
            if alarm.kind == "NOSPACE" {
                self.disarm(&alarm)
                    .await
                    .with_context(|| format!("disarming NOSPACE of member {:x}", alarm.member))?;
                disarmed.push(alarm);
            }
        }
        Ok(SpaceRecovery {
            compacted_to: revision,
            defragmented,
            disarmed,
        })
    }
}

fn alarms_of(resp: &Value) -> Vec<Alarm> {
    resp.get("alarms")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| Alarm {
            member: uint(a, "memberID"),
            kind: a
                .get("alarm")
                .and_then(Value::as_str)
                .unwrap_or("NONE")
                .to_owned(),
        })
        .filter(|a| a.kind != "NONE")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarms_as_the_gateway_writes_them() {
        let resp = json!({"header": {}, "alarms": [
            {"memberID": "13458989633860879742", "alarm": "NOSPACE"},
            {"memberID": "1", "alarm": "CORRUPT"},
            {"memberID": "2"},
        ]});
        assert_eq!(
            alarms_of(&resp),
            vec![
                Alarm {
                    member: 13458989633860879742,
                    kind: "NOSPACE".into()
                },
                Alarm {
                    member: 1,
                    kind: "CORRUPT".into()
                },
            ]
        );
        assert!(alarms_of(&json!({"header": {}})).is_empty());
    }
}
