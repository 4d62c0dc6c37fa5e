//! The HTTP listener on `METRICS_ADDR`: `GET /healthz` and `GET /metrics`, and the client side of
//! `/healthz` for `dachavideo health`.
//!
//! `/healthz` answers 200 with `{"status":"healthy","detail":...}` or 503 with `"unhealthy"`, judged like
//! the status file (`health::judge`); `/metrics` is the Prometheus text format. Plain HTTP/1 on hyper, one
//! request per connection, a bounded number of connections at once, a timeout for slow clients: it must
//! never cost the recorder anything.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::Metrics;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;
/// A client must send its request within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The judgement `/healthz` reports: `Ok(detail)` healthy, `Err(reason)` not.
pub type HealthCheck = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;
/// Run before each scrape, off the async threads, to refresh gauges that are read from disk.
pub type BeforeScrape = Arc<dyn Fn() + Send + Sync>;

/// The body of `/healthz`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HealthBody {
    pub status: String,
    pub detail: String,
}

/// Serves until the task is dropped or aborted.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: HealthCheck,
    before_scrape: BeforeScrape,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let (metrics, health, before_scrape) = (
            metrics.clone(),
            Arc::clone(&health),
            Arc::clone(&before_scrape),
        );
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let (metrics, health, before_scrape) = (
                    metrics.clone(),
                    Arc::clone(&health),
                    Arc::clone(&before_scrape),
                );
                async move {
                    Ok::<_, Infallible>(respond(&request, metrics, health, before_scrape).await)
                }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(error = %e, "metrics listener: connection ended with an error");
            }
            drop(slot);
        });
    }
}

async fn respond(
    request: &Request<Incoming>,
    metrics: Metrics,
    health: HealthCheck,
    before_scrape: BeforeScrape,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        "/healthz" => {
            let judged = health();
            let (status, body) = match judged {
                Ok(detail) => (
                    StatusCode::OK,
                    HealthBody {
                        status: "healthy".into(),
                        detail,
                    },
                ),
                Err(detail) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    HealthBody {
                        status: "unhealthy".into(),
                        detail,
                    },
                ),
            };
            let json = serde_json::to_string(&body).unwrap_or_default() + "\n";
            reply(status, "application/json", json)
        }
        "/metrics" => {
            // The refresh reads the spool directory: not on an async worker.
            let _ = tokio::task::spawn_blocking(move || before_scrape()).await;
            reply(
                StatusCode::OK,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                metrics.encode(),
            )
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /healthz or /metrics\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Asks the running service's `/healthz` at `addr` (an unspecified address such as `0.0.0.0` means this
/// machine): `Ok(detail)` when it answers 200, `Err(reason)` otherwise.
pub fn ask_health(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        let url = format!("http://{addr}/healthz");
        let response = client.get(&url).send().await.map_err(|e| {
            if e.is_connect() {
                format!("the service is not running (nothing answers at {url})")
            } else if e.is_timeout() {
                format!("no answer from {url} within {} s", timeout.as_secs())
            } else {
                format!("asking {url}: {e}")
            }
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("reading the answer of {url}: {e}"))?;
        let detail = serde_json::from_str::<HealthBody>(&text)
            .map(|body| body.detail)
            .unwrap_or_else(|_| format!("{url} answered {status}"));
        if status == reqwest::StatusCode::OK {
            Ok(detail)
        } else {
            Err(detail)
        }
    })
}
