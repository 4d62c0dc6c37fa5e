//! Counters and gauges of the whole pipeline, for Prometheus (`METRICS_ADDR`, see [`http`]).
//!
//! [`Metrics`] is a cheap cloneable handle (an `Arc`); every stage gets one and calls a method per event:
//! the camera per frame and connection, the detector per frame (its time), the recorder per clip, the
//! uploader per upload. Updating is an atomic add (the histogram takes a short lock), so the handle is used
//! whether or not anything is listening. The registry is encoded only when `/metrics` is scraped.

pub mod http;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Seconds the detector may take per frame: 1 ms to 1 s (15 fps leaves 67 ms).
const DETECTION_BUCKETS: [f64; 10] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.067, 0.1, 1.0,
];

/// The handle every stage updates.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    frames_read: Counter,
    frames_dropped: Counter,
    camera_connected: Gauge,
    camera_reconnects: Counter,
    connected_before: AtomicBool,
    detection_seconds: Histogram,
    clips_started: Counter,
    clips_recorded: Counter,
    clips_uploaded: Counter,
    uploaded_bytes: Counter,
    upload_failures: Counter,
    spool_clips: Gauge,
    spool_bytes: Gauge,
    webhook_delivered: Counter,
    webhook_lost: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dachavideo");
        let mut counter = |name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let frames_read = counter("camera_frames", "Frames read from the camera");
        let frames_dropped = counter(
            "camera_frames_dropped",
            "Frames dropped because the detector was behind",
        );
        let camera_reconnects = counter(
            "camera_reconnects",
            "Connections to the camera after the first one",
        );
        let clips_started = counter("clips_started", "Clips started by motion");
        let clips_recorded = counter("clips_recorded", "Clips closed and committed to the spool");
        let clips_uploaded = counter("clips_uploaded", "Clips the storage confirmed");
        let uploaded_bytes = counter("uploaded_bytes", "Bytes of clips the storage confirmed");
        let upload_failures = counter(
            "upload_failures",
            "Failed upload attempts (each is retried; the clip stays in the spool)",
        );
        let webhook_delivered = counter("webhook_delivered", "Events the webhook accepted");
        let webhook_lost = counter(
            "webhook_lost",
            "Events dropped (queue full) or given up after retrying",
        );
        let camera_connected = Gauge::default();
        registry.register(
            "camera_connected",
            "1 while a camera stream is open",
            camera_connected.clone(),
        );
        let spool_clips = Gauge::default();
        registry.register(
            "spool_clips",
            "Clips waiting in the spool for upload",
            spool_clips.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register(
            "spool_bytes",
            "Bytes of clips waiting in the spool for upload",
            spool_bytes.clone(),
        );
        let detection_seconds = Histogram::new(DETECTION_BUCKETS);
        registry.register(
            "detection_seconds",
            "Time the motion detector took per frame",
            detection_seconds.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            frames_read,
            frames_dropped,
            camera_connected,
            camera_reconnects,
            connected_before: AtomicBool::new(false),
            detection_seconds,
            clips_started,
            clips_recorded,
            clips_uploaded,
            uploaded_bytes,
            upload_failures,
            spool_clips,
            spool_bytes,
            webhook_delivered,
            webhook_lost,
        }))
    }
}

impl Metrics {
    pub fn frame_read(&self) {
        self.0.frames_read.inc();
    }

    pub fn frame_dropped(&self) {
        self.0.frames_dropped.inc();
    }

    /// A camera stream opened; every one after the first counts as a reconnect.
    pub fn camera_connected(&self) {
        if self.0.connected_before.swap(true, Ordering::Relaxed) {
            self.0.camera_reconnects.inc();
        }
        self.0.camera_connected.set(1);
    }

    pub fn camera_lost(&self) {
        self.0.camera_connected.set(0);
    }

    pub fn detection_took(&self, took: Duration) {
        self.0.detection_seconds.observe(took.as_secs_f64());
    }

    pub fn clip_started(&self) {
        self.0.clips_started.inc();
    }

    pub fn clip_recorded(&self) {
        self.0.clips_recorded.inc();
    }

    pub fn clip_uploaded(&self, bytes: u64) {
        self.0.clips_uploaded.inc();
        self.0.uploaded_bytes.inc_by(bytes);
    }

    pub fn upload_failed(&self) {
        self.0.upload_failures.inc();
    }

    /// What waits in the spool now.
    pub fn spool_waiting(&self, clips: usize, bytes: u64) {
        self.0.spool_clips.set(clips as i64);
        self.0
            .spool_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn webhook_delivered(&self) {
        self.0.webhook_delivered.inc();
    }

    pub fn webhook_lost(&self) {
        self.0.webhook_lost.inc();
    }

    /// The registry in the Prometheus text format (0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.0.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_show_in_the_text_format() {
        let metrics = Metrics::default();
        metrics.frame_read();
        metrics.frame_read();
        metrics.camera_connected();
        metrics.camera_connected();
        metrics.detection_took(Duration::from_millis(3));
        metrics.clip_uploaded(1000);
        metrics.spool_waiting(2, 5_000_000);
        let text = metrics.encode();
        for line in [
            "dachavideo_camera_frames_total 2",
            "dachavideo_camera_reconnects_total 1",
            "dachavideo_camera_connected 1",
            "dachavideo_clips_uploaded_total 1",
            "dachavideo_uploaded_bytes_total 1000",
            "dachavideo_spool_bytes 5000000",
            "dachavideo_detection_seconds_count 1",
            "dachavideo_detection_seconds_bucket{le=\"0.005\"} 1",
            "# TYPE dachavideo_detection_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
    }
}
