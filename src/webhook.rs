//! Events out (`EVENT_WEBHOOK_URL`): a small JSON POST when a clip starts and after storage confirmed an
//! upload, for a home-automation hub or a chat bot.
//!
//! Receives [`WebhookEvent`]s through a [`Webhook`] handle (a bounded queue: the recorder and the uploader
//! never wait for it; when it is full the event is dropped with a warning). One task sends them in order,
//! each request with a timeout, retrying a failure with exponential back-off for a few minutes before it
//! gives up with a warning. The payload carries no secret; the URL may (a token in its query or user
//! part), so logs show it redacted and errors never include it.

use std::fmt;
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use url::Url;

use crate::config::ConfigError;
use crate::metrics::Metrics;
use crate::spool::ClipMeta;

/// Events waiting to be sent; beyond this they are dropped.
const QUEUE: usize = 64;
/// One POST, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one event is retried before it is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(180);

/// The webhook's URL; `Display` hides its user part and query (either may hold a token).
#[derive(Clone)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        const VAR: &str = "EVENT_WEBHOOK_URL";
        // Never echo the value: it may carry a token.
        let url = Url::parse(raw.trim()).map_err(|e| ConfigError {
            variable: VAR,
            reason: format!("not a URL ({e}); expected e.g. https://hub.local/hooks/dachavideo"),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError {
                variable: VAR,
                reason: "must be an http:// or https:// URL with a host".into(),
            });
        }
        Ok(Self(url))
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if !shown.username().is_empty() || shown.password().is_some() {
            // Cannot fail: a URL with a host can have credentials.
            let _ = shown.set_username("***");
            let _ = shown.set_password(None);
        }
        let had_query = shown.query().is_some();
        shown.set_query(None);
        f.write_str(shown.as_str())?;
        if had_query {
            f.write_str("?<redacted>")?;
        }
        Ok(())
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

/// What is posted.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WebhookEvent {
    /// `clip_started` or `clip_uploaded`.
    pub event: &'static str,
    pub camera: String,
    /// The blob name: `<camera>/<day>/<time>.mp4`.
    pub clip: String,
    /// UTC, RFC 3339, whole seconds (as in the clip's name and metadata).
    pub start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Where the clip is now: the blob's URL without any query (no SAS), or the local file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl WebhookEvent {
    pub fn started(camera: &str, clip: &str, wall: SystemTime) -> Self {
        let start = time::OffsetDateTime::from(wall);
        let start = start
            .replace_nanosecond(0)
            .unwrap_or(start)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            event: "clip_started",
            camera: camera.to_string(),
            clip: clip.to_string(),
            start,
            seconds: None,
            frames: None,
            bytes: None,
            url: None,
        }
    }

    pub fn uploaded(clip: &str, meta: &ClipMeta, location: String) -> Self {
        Self {
            event: "clip_uploaded",
            camera: meta.camera.clone(),
            clip: clip.to_string(),
            start: meta.start.clone(),
            seconds: Some((meta.seconds * 10.0).round() / 10.0),
            frames: Some(meta.frames),
            bytes: Some(meta.bytes),
            url: Some(strip_query(&location)),
        }
    }
}

/// A location without query or credentials, whatever the sink gave.
fn strip_query(location: &str) -> String {
    match Url::parse(location) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        // A local path: nothing secret in it.
        Err(_) => location.to_string(),
    }
}

/// The stages' side: queue an event, never wait. A disabled webhook ignores everything.
#[derive(Clone, Default)]
pub struct Webhook {
    queue: Option<mpsc::Sender<WebhookEvent>>,
    metrics: Option<Metrics>,
}

impl Webhook {
    pub fn send(&self, event: WebhookEvent) {
        let Some(queue) = &self.queue else {
            return;
        };
        if let Err(e) = queue.try_send(event) {
            let event = match &e {
                mpsc::error::TrySendError::Full(event)
                | mpsc::error::TrySendError::Closed(event) => event,
            };
            warn!(event = event.event, clip = %event.clip, "webhook behind or stopped: event dropped");
            if let Some(metrics) = &self.metrics {
                metrics.webhook_lost();
            }
        }
    }
}

/// Starts the sender task for `url`; returns the handle for the stages and the task, which ends once every
/// handle is dropped and the queue is empty.
pub fn start(
    url: WebhookUrl,
    metrics: Metrics,
) -> anyhow::Result<(Webhook, tokio::task::JoinHandle<()>)> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("dachavideo/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            anyhow::anyhow!(
                "EVENT_WEBHOOK_URL: cannot make an HTTP client: {}",
                reason(&e)
            )
        })?;
    let (queue, events) = mpsc::channel(QUEUE);
    info!(url = %url, "clip events go to the webhook");
    let task = tokio::spawn(run(client, url, events, metrics.clone()));
    Ok((
        Webhook {
            queue: Some(queue),
            metrics: Some(metrics),
        },
        task,
    ))
}

async fn run(
    client: reqwest::Client,
    url: WebhookUrl,
    mut events: mpsc::Receiver<WebhookEvent>,
    metrics: Metrics,
) {
    while let Some(event) = events.recv().await {
        if deliver(&client, &url, &event).await {
            metrics.webhook_delivered();
        } else {
            metrics.webhook_lost();
        }
    }
}

/// Posts one event, retrying for [`GIVE_UP_AFTER`]; whether it arrived.
async fn deliver(client: &reqwest::Client, url: &WebhookUrl, event: &WebhookEvent) -> bool {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .with_total_delay(Some(GIVE_UP_AFTER))
        .without_max_times()
        .build();
    let body = match serde_json::to_vec(event) {
        Ok(body) => body,
        Err(e) => {
            warn!(error = %e, "webhook: cannot encode an event");
            return false;
        }
    };
    let mut tries = 0_u32;
    loop {
        tries += 1;
        let request = client
            .post(url.0.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        let outcome = match request.send().await {
            Ok(response) if response.status().is_success() => {
                debug!(event = event.event, clip = %event.clip, tries, "webhook delivered");
                return true;
            }
            Ok(response) => {
                let status = response.status();
                // A request the receiver rejects outright will not get better by repeating it.
                let retry = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                (format!("answered {status}"), retry)
            }
            Err(e) => (reason(&e), true),
        };
        let (why, retry) = outcome;
        match delays.next().filter(|_| retry) {
            Some(delay) => {
                debug!(event = event.event, clip = %event.clip, error = %why, tries, "webhook failed; retrying");
                tokio::time::sleep(delay).await;
            }
            None => {
                warn!(
                    url = %url,
                    event = event.event,
                    clip = %event.clip,
                    error = %why,
                    tries,
                    "webhook failed; event given up"
                );
                return false;
            }
        }
    }
}

/// A request error for a log line: what failed and the innermost cause, never the URL.
fn reason(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source: &dyn std::error::Error = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    if std::ptr::addr_eq(source, error) {
        return kind.to_string();
    }
    crate::telemetry::redact_queries(&format!("{kind}: {source}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_shown_without_its_token() {
        let url = WebhookUrl::parse("https://bot:hunter2@hub.local/hook?token=s3cret&x=1").unwrap();
        let shown = url.to_string();
        assert_eq!(shown, "https://***@hub.local/hook?<redacted>");
        assert!(!format!("{url:?}").contains("s3cret"));
        for bad in [
            "hub.local/hook?token=s3cret",
            "ftp://hub.local/x?token=s3cret",
            "http://?token=s3cret",
        ] {
            let error = WebhookUrl::parse(bad).unwrap_err();
            assert_eq!(error.variable, "EVENT_WEBHOOK_URL");
            assert!(!error.to_string().contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn events_carry_the_clip_and_no_query() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_250);
        let started = WebhookEvent::started("gate", "gate/2027-01-15/20270115T080000Z.mp4", wall);
        let json = serde_json::to_value(&started).unwrap();
        assert_eq!(json["event"], "clip_started");
        assert_eq!(json["start"], "2027-01-15T08:00:00Z");
        assert!(
            json.get("url").is_none() && json.get("frames").is_none(),
            "{json}"
        );

        let meta = ClipMeta {
            camera: "gate".into(),
            start: "2027-01-15T08:00:00Z".into(),
            seconds: 5.0667,
            frames: 76,
            boxes: 70,
            bytes: 123_456,
            md5: "x".into(),
            salvaged: false,
        };
        let uploaded = WebhookEvent::uploaded(
            "gate/2027-01-15/20270115T080000Z.mp4",
            &meta,
            "https://acct.blob.core.windows.net/clips/gate/2027-01-15/20270115T080000Z.mp4?sp=cw&sig=SECRET"
                .into(),
        );
        let json = serde_json::to_string(&uploaded).unwrap();
        assert!(!json.contains("SECRET") && !json.contains('?'), "{json}");
        assert!(json.contains(r#""seconds":5.1,"frames":76"#), "{json}");
    }
}
