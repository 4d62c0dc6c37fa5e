//! The upload stage: takes finished clips from the spool, oldest first, and puts them into storage.
//!
//! Storage is a [`ClipSink`]: Azure Blob Storage ([`AzureSink`]) or a local directory ([`LocalDirSink`]).
//! A clip's attachments (snapshot, event record) go up first, then the clip; the local files are deleted
//! only after the sink confirmed all of them. A failure keeps the clip and retries the whole set with capped
//! exponential back-off and jitter (names are fixed, so a retry replaces what went up before); the
//! uploader never talks to the camera side.

mod azure;
mod local;

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use azure::AzureSink;
pub use local::LocalDirSink;

use crate::metrics::Metrics;
use crate::spool::{Attachment, ClipMeta, Spool, SpooledClip};
use crate::webhook::{Webhook, WebhookEvent};

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Will not succeed by retrying as is (wrong key, missing permission, rejected name): fix the config.
    #[error("{0}")]
    Permanent(String),
    /// Network, timeout, server busy: retried.
    #[error("{0}")]
    Transient(String),
    #[error("reading the clip from the spool: {0}")]
    Io(#[from] std::io::Error),
}

/// Somewhere finished clips go.
pub trait ClipSink: Send + Sync {
    /// Stores the clip under its blob name; Ok only once the storage confirmed it.
    fn upload(
        &self,
        clip: &SpooledClip,
        meta: &ClipMeta,
    ) -> impl Future<Output = Result<(), UploadError>> + Send;
    /// Stores a small file that goes with a clip (snapshot, event record) under `blob_name`.
    fn upload_attachment(
        &self,
        blob_name: &str,
        kind: Attachment,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<(), UploadError>> + Send;
    /// Checks the storage is reachable and writable (creating the container if needed); a line for reports.
    fn probe(&self) -> impl Future<Output = Result<String, UploadError>> + Send;
    /// Where clips go, secrets redacted.
    fn describe(&self) -> String;
    /// Where the clip `blob_name` is once uploaded (a URL without query, or a path), for the webhook.
    fn location(&self, blob_name: &str) -> String;
}

/// Retry delays: 1 s doubling to at most `max` (UPLOAD_RETRY_MAX), with jitter, forever.
fn retry_delays(max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1).min(max))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Uploads clips from the spool until `capture_done` is cancelled and the spool is empty. After
/// `capture_done`, a failure ends the loop at once instead of waiting out the back-off: the clips stay in
/// the spool for the next start. The caller bounds the whole by `SHUTDOWN_GRACE`.
pub async fn run<S: ClipSink>(
    sink: &S,
    spool: &Spool,
    max_retry_delay: Duration,
    capture_done: &CancellationToken,
    metrics: &Metrics,
    webhook: &Webhook,
) {
    let mut delays = retry_delays(max_retry_delay);
    loop {
        let pending = match spool.pending() {
            Ok(pending) => pending,
            Err(e) => {
                error!(spool = %spool.root().display(), error = %e, "cannot read the spool");
                Vec::new()
            }
        };
        if pending.is_empty() {
            if capture_done.is_cancelled() {
                return;
            }
            wait_for_clip(spool, capture_done).await;
            continue;
        }
        for clip in &pending {
            let uploaded = upload_one(sink, spool, clip).await;
            if let Err(e) = &uploaded {
                metrics.upload_failed();
                let retry_in = delays.next().unwrap_or(max_retry_delay);
                warn!(
                    clip = %clip.blob_name,
                    error = %e,
                    permanent = matches!(e, UploadError::Permanent(_)),
                    retry_in = %humantime::format_duration(Duration::from_secs(retry_in.as_secs().max(1))),
                    waiting = pending.len(),
                    "upload failed; the clip stays on disk"
                );
                if capture_done.is_cancelled() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(retry_in) => {}
                    () = capture_done.cancelled() => {}
                }
                break;
            }
            metrics.clip_uploaded(clip.size);
            if let Ok(meta) = uploaded {
                let location = sink.location(&clip.blob_name);
                webhook.send(WebhookEvent::uploaded(&clip.blob_name, &meta, location));
            }
            delays = retry_delays(max_retry_delay);
        }
    }
}

async fn wait_for_clip(spool: &Spool, capture_done: &CancellationToken) {
    // A commit wakes the uploader at once; the periodic re-scan only picks up clips put there by hand.
    tokio::select! {
        _ = tokio::time::timeout(Duration::from_secs(30), spool.clip_committed()) => {}
        () = capture_done.cancelled() => {}
    }
}

async fn upload_one<S: ClipSink>(
    sink: &S,
    spool: &Spool,
    clip: &SpooledClip,
) -> Result<ClipMeta, UploadError> {
    let started = std::time::Instant::now();
    let meta = spool.meta(clip)?;
    for (kind, path) in clip.attachments() {
        let bytes = tokio::fs::read(&path).await?;
        sink.upload_attachment(&kind.blob_name(&clip.blob_name), kind, bytes)
            .await?;
    }
    sink.upload(clip, &meta).await?;
    if let Err(e) = spool.remove(clip) {
        error!(clip = %clip.blob_name, error = %e, "uploaded, but the local copy could not be deleted");
    }
    info!(
        clip = %clip.blob_name,
        bytes = clip.size,
        ms = started.elapsed().as_millis() as u64,
        to = %sink.describe(),
        "clip uploaded"
    );
    Ok(meta)
}

/// The sink the configuration chose.
pub enum ConfiguredSink {
    Azure(AzureSink),
    LocalDir(LocalDirSink),
}

impl ConfiguredSink {
    pub fn from_settings(settings: &crate::config::StorageSettings) -> Result<Self, UploadError> {
        Ok(match settings {
            crate::config::StorageSettings::Azure(azure) => Self::Azure(AzureSink::new(azure)?),
            crate::config::StorageSettings::LocalDir(dir) => Self::LocalDir(LocalDirSink::new(dir)),
        })
    }
}

impl ClipSink for ConfiguredSink {
    async fn upload(&self, clip: &SpooledClip, meta: &ClipMeta) -> Result<(), UploadError> {
        match self {
            Self::Azure(sink) => sink.upload(clip, meta).await,
            Self::LocalDir(sink) => sink.upload(clip, meta).await,
        }
    }

    async fn upload_attachment(
        &self,
        blob_name: &str,
        kind: Attachment,
        bytes: Vec<u8>,
    ) -> Result<(), UploadError> {
        match self {
            Self::Azure(sink) => sink.upload_attachment(blob_name, kind, bytes).await,
            Self::LocalDir(sink) => sink.upload_attachment(blob_name, kind, bytes).await,
        }
    }

    async fn probe(&self) -> Result<String, UploadError> {
        match self {
            Self::Azure(sink) => sink.probe().await,
            Self::LocalDir(sink) => sink.probe().await,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Azure(sink) => sink.describe(),
            Self::LocalDir(sink) => sink.describe(),
        }
    }

    fn location(&self, blob_name: &str) -> String {
        match self {
            Self::Azure(sink) => sink.location(blob_name),
            Self::LocalDir(sink) => sink.location(blob_name),
        }
    }
}
