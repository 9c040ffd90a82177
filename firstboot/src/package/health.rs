//! A package's health checks: HTTPS GETs, the server verified by the CA
//! the spec names (or plain HTTP on a loopback address), answering 2xx
//! and the expected body if the spec names one. `globular apply` waits
//! for all of them.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use globular_substrate::tls;

use super::render::Facts;
use super::spec::Spec;
use crate::layout::Layout;

/// How often a check that does not pass yet says what it last got.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Waits until every check passes, at most `wait`, and while `alive` says
/// the components run; their names.
pub(super) async fn wait(
    layout: &Layout,
    spec: &Spec,
    facts: &Facts,
    wait: Duration,
    alive: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + wait;
    let mut passed = Vec::new();
    for (i, h) in spec.health.iter().enumerate() {
        let url = facts.render(&h.url, &format!("health[{i}].url"))?;
        let http = match h.ca {
            Some(ca) => {
                let ca = layout.read(&layout.kubernetes_secret(ca.file(), "crt"))?;
                tls::http_client(tls::client_config(&ca, None)?)?
            }
            // A loopback http:// URL (spec.rs): nothing to verify.
            None => reqwest::Client::builder()
                .build()
                .context("building an HTTP client")?,
        };
        let mut reported = Instant::now();
        loop {
            let last = match http.get(&url).timeout(Duration::from_secs(10)).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    let expected = h.expect.as_deref().is_none_or(|e| body.trim() == e);
                    if status.is_success() && expected {
                        break;
                    }
                    format!("{status}: {}", body.trim())
                }
                Err(e) => format!("{e:#}"),
            };
            alive().with_context(|| format!("waiting for health check {}", h.name))?;
            // What a slow start is waiting for, on the journal and console.
            if reported.elapsed() >= REPORT_EVERY {
                tracing::info!("health check {} not passing yet: {last}", h.name);
                reported = Instant::now();
            }
            if Instant::now() > deadline {
                bail!(
                    "health check {} ({url}) did not pass within {} s; last: {last}",
                    h.name,
                    wait.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        tracing::info!("health check {} passed", h.name);
        passed.push(h.name.clone());
    }
    Ok(passed)
}
