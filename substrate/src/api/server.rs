//! The server loop: connection limits, TLS handshakes, the caller's
//! certificate, HTTP/1.1, and the per-request deadline and body limit
//! ([`Limits`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use globular_cluster::pki;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_service::Service as _;

use super::limits::{Connections, Limits};
use super::{Api, ApiError, Peer, Remote};

/// How often refused connections are reported (at most).
const REFUSALS_REPORTED_EVERY: Duration = Duration::from_secs(10);

/// Serves the API on `listener` with the default [`Limits`] until
/// `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<Api>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, tls, api, Limits::default(), shutdown).await
}

/// Serves the API on `listener` within `limits` until `shutdown` completes.
/// A connection over a connection limit is closed at once.
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<Api>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    limits.check_nofile();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let connections = Connections::new(&limits);
    let limits = Arc::new(limits);
    let router = api
        .router()
        .layer(axum::middleware::from_fn_with_state(limits.clone(), guard))
        // The guard reads bodies within the limit already; this keeps any
        // extractor from reading more should one ever get a raw body.
        .layer(DefaultBodyLimit::max(limits.max_body));
    let mut refusals = Refusals::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match connections.admit(remote.ip()) {
            Ok(permit) => permit,
            Err(refused) => {
                tracing::debug!("closing the connection from {remote}: over {refused}");
                refusals.count(&refused);
                drop(stream);
                continue;
            }
        };
        // Small requests and answers: do not let Nagle's algorithm wait for
        // the peer's delayed ACK (40 ms per exchange).
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake with {remote}: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake with {remote}: timed out");
                    return;
                }
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|der| pki::identity_of_der(der).ok());
            // The caller's certificate and address go into each request's
            // extensions (cheaper than layering the router per connection).
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(Peer(peer.clone()));
                request.extensions_mut().insert(Remote(Some(remote.ip())));
                router.clone().call(request)
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!("connection from {remote}: {e}");
            }
        });
    }
}

/// Refused connections since the last report: reported at most every
/// [`REFUSALS_REPORTED_EVERY`], not once each (a flood would flood the log).
#[derive(Debug, Default)]
struct Refusals {
    since: usize,
    reported: Option<Instant>,
}

impl Refusals {
    fn count(&mut self, refused: &impl std::fmt::Display) {
        self.since += 1;
        if self
            .reported
            .is_some_and(|at| at.elapsed() < REFUSALS_REPORTED_EVERY)
        {
            return;
        }
        tracing::warn!(
            "closed {} connection(s) over a connection limit, the last over {refused}",
            self.since
        );
        self.since = 0;
        self.reported = Some(Instant::now());
    }
}

/// Every request: its body is read within [`Limits::max_body`] (413 above
/// it) and the whole request, body and answer, within
/// [`Limits::request_timeout`] (408 while reading the body, 503 while
/// answering).
async fn guard(State(limits): State<Arc<Limits>>, request: Request, next: Next) -> Response {
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let (parts, body) = request.into_parts();
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body: larger than {} bytes", limits.max_body),
        )
        .into_response()
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return too_large();
    }
    let body = match tokio::time::timeout_at(deadline, axum::body::to_bytes(body, limits.max_body))
        .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            if e.into_inner().is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            return ApiError::bad("request body: could not be read").into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body: not received within {} s",
                    limits.request_timeout.as_secs_f64()
                ),
            )
            .into_response()
        }
    };
    let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
    match tokio::time::timeout_at(
        deadline,
        next.run(Request::from_parts(parts, Body::from(body))),
    )
    .await
    {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                "{method} {path}: no answer within {} s",
                limits.request_timeout.as_secs_f64()
            );
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request was not answered in time; retry",
            )
            .into_response()
        }
    }
}
