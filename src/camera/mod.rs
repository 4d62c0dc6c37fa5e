//! The camera stage: keeps an RTSP stream open forever and emits its frames.
//!
//! Owns the connection. Emits `StreamEvent<Frame>`: `Started` after each (re)connect, one `Item` per frame,
//! `Ended` when the stream is lost. When the camera is unreachable or the stream ends it logs a warning (the
//! URL's password redacted), waits `RECONNECT_INTERVAL` and tries again, until shutdown. It never blocks on
//! its consumer: when the frame queue is full the new frame is dropped and counted (a full queue means the
//! detector is behind, and the queued frames are older) and its packets go with the next frame, so the
//! recorder's packets stay whole; stream boundaries are always delivered.

mod capture;
mod credentials;
mod diagnose;

use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};
use tracing::{debug, info, warn};

pub use capture::{CameraFrame, CameraStream, CaptureError};
pub use diagnose::diagnose;

use crate::config::CameraSettings;
use crate::health::FrameWatch;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::stream::{Encoded, Frame, StreamEvent, Timestamp};

/// The source of timestamps for live frames: monotonic since the camera stage started, and wall time.
pub struct LiveClock {
    started: Instant,
}

impl Default for LiveClock {
    fn default() -> Self {
        Self {
            started: Instant::now(),
        }
    }
}

impl LiveClock {
    pub fn now(&self) -> Timestamp {
        Timestamp {
            pts: self.started.elapsed(),
            wall: std::time::SystemTime::now(),
        }
    }
}

/// Runs until shutdown: connect, read, reconnect.
pub fn run(
    settings: &CameraSettings,
    output: &Sender<StreamEvent<Frame>>,
    frames_seen: &FrameWatch,
    metrics: &Metrics,
    shutdown: &Shutdown,
) {
    let clock = LiveClock::default();
    let mut seq = 0_u64;
    while !shutdown.is_requested() {
        let opened_at = Instant::now();
        match CameraStream::open(settings) {
            Ok(mut stream) => {
                let info = stream.info();
                info!(
                    camera = %settings.url,
                    width = info.size.width,
                    height = info.size.height,
                    fps = info.fps,
                    open_ms = opened_at.elapsed().as_millis() as u64,
                    "camera connected"
                );
                metrics.camera_connected();
                if output.send(StreamEvent::Started(info)).is_err() {
                    return;
                }
                let connected_at = Instant::now();
                let end = pump_frames(
                    &mut stream,
                    &clock,
                    &mut seq,
                    output,
                    frames_seen,
                    metrics,
                    shutdown,
                );
                metrics.camera_lost();
                let seconds = connected_at.elapsed().as_secs_f64();
                let received_fps = end.frames as f64 / seconds.max(0.001);
                if shutdown.is_requested() {
                    info!(
                        frames = end.frames,
                        dropped = end.dropped,
                        fps = format!("{received_fps:.1}"),
                        "camera stopped"
                    );
                    let _ = output.send(StreamEvent::Ended {
                        reason: "shutdown".into(),
                    });
                    return;
                }
                warn!(
                    camera = %settings.url,
                    reason = %end.reason,
                    frames = end.frames,
                    dropped = end.dropped,
                    retry_in = %humantime::format_duration(settings.reconnect_interval),
                    "camera stream lost"
                );
                if output
                    .send(StreamEvent::Ended { reason: end.reason })
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                let cause = diagnose(&settings.url, settings.open_timeout).unwrap_or_else(|| {
                    "the camera answers RTSP; GStreamer could not open or decode the stream".into()
                });
                warn!(
                    camera = %settings.url,
                    error = %error,
                    cause = %cause,
                    retry_in = %humantime::format_duration(settings.reconnect_interval),
                    "camera unreachable"
                );
            }
        }
        if shutdown.sleep(settings.reconnect_interval) {
            return;
        }
    }
}

/// How a connection's stream ended: why, frames read, frames dropped because the detector was behind.
struct StreamEnd {
    reason: String,
    frames: u64,
    dropped: u64,
}

/// Reads frames until the stream fails or shutdown.
fn pump_frames(
    stream: &mut CameraStream,
    clock: &LiveClock,
    seq: &mut u64,
    output: &Sender<StreamEvent<Frame>>,
    frames_seen: &FrameWatch,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> StreamEnd {
    let mut end = StreamEnd {
        reason: "shutdown".into(),
        frames: 0,
        dropped: 0,
    };
    // The packets of a dropped frame, for the next frame.
    let mut carried = Encoded::default();
    while !shutdown.is_requested() {
        let CameraFrame { image, mut encoded } = match stream.read() {
            Ok(frame) => frame,
            Err(error) => {
                end.reason = error.to_string();
                return end;
            }
        };
        end.frames += 1;
        frames_seen.frame_arrived();
        metrics.frame_read();
        *seq += 1;
        encoded.prepend(std::mem::take(&mut carried));
        let frame = Frame {
            image,
            seq: *seq,
            at: clock.now(),
            encoded,
        };
        match output.try_send(StreamEvent::Item(frame)) {
            Ok(()) => {}
            Err(TrySendError::Full(event)) => {
                if let StreamEvent::Item(dropped) = event {
                    carried = dropped.encoded;
                }
                end.dropped += 1;
                metrics.frame_dropped();
                debug!(dropped = end.dropped, "detector behind; frame dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                end.reason = "pipeline stopped".into();
                return end;
            }
        }
    }
    end
}
