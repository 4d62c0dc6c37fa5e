//! Wires the stages: camera → motion → recorder on their own threads (OpenCV blocks), the uploader as a
//! tokio task, bounded channels between them. Owns the threads and tasks and the order of shutdown:
//! stop capture, close the open clip, give pending uploads `SHUTDOWN_GRACE`, return.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ServiceConfig;
use crate::health::{self, FrameWatch};
use crate::metrics::{self, Metrics};
use crate::recorder::{ClipEvent, Recorder};
use crate::shutdown::Shutdown;
use crate::spool::Spool;
use crate::upload::ClipSink;
use crate::webhook::{self, Webhook, WebhookEvent};
use crate::{camera, motion, recorder, upload};

/// Frames that may wait between two stages: about half a second at 15 fps. When the detector falls
/// further behind, the camera drops new frames rather than block (see `camera`).
const STAGE_QUEUE_FRAMES: usize = 8;

/// How long the stop waits for the camera thread to finish its read and log its last line.
const CAMERA_STOP_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs the service until `shutdown` is requested and the shutdown sequence is over.
pub async fn run<S: ClipSink + 'static>(
    config: ServiceConfig,
    sink: S,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let spool = Spool::open(&config.spool_dir).with_context(|| {
        format!(
            "SPOOL_DIR {}: cannot create or open",
            config.spool_dir.display()
        )
    })?;
    let spool = spool.with_limits(config.spool_limits);
    let salvage = spool
        .salvage_interrupted(&config.recorder.camera_name, recorder::inspect_clip)
        .context("salvaging interrupted recordings")?;
    spool
        .enforce_limits()
        .context("applying the spool's size limits")?;
    let waiting = spool.pending().context("reading the spool")?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        camera = %config.camera.url,
        name = %config.recorder.camera_name,
        storage = %sink.describe(),
        spool = %config.spool_dir.display(),
        clips = %config.recorder.clips.summary(),
        waiting = waiting.len(),
        salvaged = salvage.salvaged.len(),
        quarantined = salvage.quarantined.len(),
        "dachavideo started"
    );

    let (frames_tx, frames_rx) = crossbeam_channel::bounded(STAGE_QUEUE_FRAMES);
    let (verdicts_tx, verdicts_rx) = crossbeam_channel::bounded(STAGE_QUEUE_FRAMES);
    let frames_seen = FrameWatch::default();
    let started_ms = health::unix_millis(SystemTime::now());
    let metrics = Metrics::default();
    let metrics_task = match config.metrics_addr {
        Some(addr) => Some(start_metrics_listener(
            addr,
            &metrics,
            &spool,
            &frames_seen,
            started_ms,
            config.health_max_frame_age,
        )?),
        None => None,
    };
    let (webhook, webhook_task) = match config.webhook_url.clone() {
        Some(url) => {
            let (webhook, task) = webhook::start(url, metrics.clone())?;
            (webhook, Some(task))
        }
        None => (Webhook::default(), None),
    };
    let camera_thread = spawn_stage("camera", {
        let (settings, frames_seen, metrics, shutdown) = (
            config.camera.clone(),
            frames_seen.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        move || camera::run(&settings, &frames_tx, &frames_seen, &metrics, &shutdown)
    })?;
    let status_task = tokio::spawn(write_status_until_shutdown(
        config.spool_dir.clone(),
        frames_seen,
        started_ms,
        shutdown.clone(),
    ));
    let motion_thread = spawn_stage("motion", {
        let (settings, shutdown, metrics) =
            (config.motion.clone(), shutdown.clone(), metrics.clone());
        move || motion::run(settings, &frames_rx, &verdicts_tx, &shutdown, &metrics)
    })?;
    let mut recorder = Recorder::new(config.recorder.clone(), spool.clone());
    recorder.observe(clip_observer(metrics.clone(), webhook.clone()));
    let recorder_thread = spawn_stage("recorder", {
        let shutdown = shutdown.clone();
        move || recorder::run(recorder, &verdicts_rx, &shutdown)
    })?;

    let capture_done = CancellationToken::new();
    let sink = Arc::new(sink);
    let uploader = tokio::spawn({
        let retry_max = config.upload_retry_max;
        let (sink, spool, capture_done) = (Arc::clone(&sink), spool.clone(), capture_done.clone());
        let webhook = webhook.clone();
        async move {
            upload::run(
                sink.as_ref(),
                &spool,
                retry_max,
                &capture_done,
                &metrics,
                &webhook,
            )
            .await
        }
    });

    shutdown.requested().await;
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    let started = Instant::now();
    // The recorder closes its clip as soon as it sees the request; the camera may sit in a read until its
    // timeout, so it is waited for only briefly, last.
    let recorder_joined = tokio::time::timeout_at(deadline, join_stage(recorder_thread)).await;
    if recorder_joined.is_err() {
        warn!("the recorder did not finish within SHUTDOWN_GRACE");
    }
    capture_done.cancel();
    if tokio::time::timeout_at(deadline, uploader).await.is_err() {
        let left = spool.pending().map(|p| p.len()).unwrap_or_default();
        warn!(
            clips = left,
            "SHUTDOWN_GRACE is over; clips not uploaded stay in the spool for the next start"
        );
    }
    drop(webhook);
    if let Some(task) = webhook_task {
        send_last_events(task, deadline).await;
    }
    let _ = tokio::time::timeout_at(deadline, join_stage(motion_thread)).await;
    // The camera sees the request after its current read (a frame interval when the camera streams) and
    // logs its frame counts; a camera stuck until its read timeout is not waited for.
    let camera_wait = deadline.min(tokio::time::Instant::now() + CAMERA_STOP_WAIT);
    let _ = tokio::time::timeout_at(camera_wait, join_stage(camera_thread)).await;
    status_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    // A stopped service is not healthy: take the status away at once rather than let it go stale.
    let _ = std::fs::remove_file(health::status_path(&config.spool_dir));
    info!(ms = started.elapsed().as_millis() as u64, "stopped");
    Ok(())
}

/// What the recorder's clips do to the metrics and the webhook.
fn clip_observer(metrics: Metrics, webhook: Webhook) -> recorder::ClipObserver {
    Box::new(move |event| match event {
        ClipEvent::Started {
            blob_name,
            camera,
            wall,
        } => {
            metrics.clip_started();
            webhook.send(WebhookEvent::started(camera, blob_name, wall));
        }
        ClipEvent::Recorded(_) => metrics.clip_recorded(),
    })
}

/// Lets the webhook send what the last clips produced: until `deadline`, and at most a few seconds, so a
/// receiver that is down does not hold up the stop.
async fn send_last_events(task: tokio::task::JoinHandle<()>, deadline: tokio::time::Instant) {
    let until = deadline.min(tokio::time::Instant::now() + std::time::Duration::from_secs(5));
    let abort = task.abort_handle();
    if tokio::time::timeout_at(until, task).await.is_err() {
        abort.abort();
        warn!("webhook events still unsent at shutdown were dropped");
    }
}

/// Binds `METRICS_ADDR` (failing the start when it cannot) and serves `/healthz` and `/metrics` on it.
fn start_metrics_listener(
    addr: std::net::SocketAddr,
    metrics: &Metrics,
    spool: &Spool,
    frames_seen: &FrameWatch,
    started_ms: u64,
    max_frame_age: std::time::Duration,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(listener)
        })
        .with_context(|| format!("METRICS_ADDR {addr}: cannot listen"))?;
    info!(
        addr = %addr,
        "serving /healthz and /metrics"
    );
    let frames_seen = frames_seen.clone();
    let health: metrics::http::HealthCheck = Arc::new(move || {
        health::judge_live(&frames_seen, started_ms, SystemTime::now(), max_frame_age)
    });
    let before_scrape: metrics::http::BeforeScrape = Arc::new({
        let (metrics, spool) = (metrics.clone(), spool.clone());
        move || {
            if let Ok(pending) = spool.pending() {
                metrics.spool_waiting(pending.len(), pending.iter().map(|c| c.size).sum());
            }
        }
    });
    Ok(tokio::spawn(metrics::http::serve(
        listener,
        metrics.clone(),
        health,
        before_scrape,
    )))
}

/// Keeps the status file for `dachavideo health` fresh.
async fn write_status_until_shutdown(
    spool_dir: PathBuf,
    frames_seen: FrameWatch,
    started_ms: u64,
    shutdown: Shutdown,
) {
    let mut warned = false;
    while !shutdown.is_requested() {
        let status = health::Status {
            pid: std::process::id(),
            started_ms,
            updated_ms: health::unix_millis(SystemTime::now()),
            last_frame_ms: frames_seen.last_frame(),
        };
        if let Err(e) = health::write_status(&spool_dir, &status)
            && !warned
        {
            warn!(error = %e, "cannot write the health status; `dachavideo health` will report unhealthy");
            warned = true;
        }
        tokio::select! {
            () = tokio::time::sleep(health::STATUS_INTERVAL) => {}
            () = shutdown.requested() => {}
        }
    }
}

fn spawn_stage(name: &str, body: impl FnOnce() + Send + 'static) -> anyhow::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(body)
        .with_context(|| format!("starting the {name} thread"))
}

async fn join_stage(thread: JoinHandle<()>) {
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}
