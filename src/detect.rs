//! `dachavideo detect`: the service's detector and recorder run over a video file instead of a camera.
//!
//! Frames are stamped from their position in the file (frame number / frame rate), so clip start and end
//! are file times. Clips are written below the output directory as the spool lays them out.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Serialize;

use crate::camera::{CameraFrame, CameraStream, CaptureError};
use crate::config::{ClipSettings, MotionSettings, RecorderSettings};
use crate::motion::MotionStage;
use crate::recorder::{ClipReady, Recorder};
use crate::spool::Spool;
use crate::stream::{Frame, StreamEvent, Timestamp};

/// One clip found in the file, as printed (one JSON line each).
#[derive(Debug, Serialize)]
pub struct DetectedClip {
    pub clip: String,
    /// Seconds into the file of the clip's first frame (pre-roll included), of the first motion, and of
    /// the end of its last frame.
    pub start: f64,
    pub motion_start: f64,
    pub end: f64,
    pub frames: u64,
    pub boxes: u64,
}

/// Runs detection and recording over `video`, writing clips below `out`; calls `on_clip` for each.
pub fn detect_file(
    video: &Path,
    out: &Path,
    motion: MotionSettings,
    clips: ClipSettings,
    mut on_clip: impl FnMut(DetectedClip),
) -> anyhow::Result<()> {
    let mut source = CameraStream::open_file(video)
        .with_context(|| format!("{}: cannot open as a video", video.display()))?;
    let info = source.info();
    let spool = Spool::open(out).with_context(|| format!("creating {}", out.display()))?;
    let camera_name = video
        .file_stem()
        .map(|s| {
            s.to_string_lossy()
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
        })
        .unwrap_or_else(|| "video".into());
    let mut recorder = Recorder::new(RecorderSettings { camera_name, clips }, spool.clone());
    let mut motion = MotionStage::new(motion);
    let frame_interval = frame_pts(1, info.fps);
    let wall_base = SystemTime::now();

    let mut report = |ready: Option<ClipReady>| {
        if let Some(ready) = ready {
            on_clip(DetectedClip {
                clip: ready.clip.path.display().to_string(),
                start: millis(ready.first_pts),
                motion_start: millis(ready.motion_pts),
                end: millis(ready.last_pts + frame_interval),
                frames: ready.frames,
                boxes: ready.boxes,
            });
        }
    };
    report(recorder.handle(motion.handle(StreamEvent::Started(info))?)?);
    let mut seq = 0_u64;
    loop {
        let CameraFrame { image, encoded } = match source.read() {
            Ok(frame) => frame,
            Err(CaptureError::Ended) => break,
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", video.display()));
            }
        };
        let pts = frame_pts(seq, info.fps);
        let frame = Frame {
            image,
            seq,
            at: Timestamp {
                pts,
                wall: wall_base + pts,
            },
            encoded,
        };
        seq += 1;
        report(recorder.handle(motion.handle(StreamEvent::Item(frame))?)?);
    }
    let end = StreamEvent::Ended {
        reason: "end of file".into(),
    };
    report(recorder.handle(motion.handle(end)?)?);
    Ok(())
}

/// Frame `seq`'s time in a video of `fps` frames a second, to the nearest nanosecond (as a product of a
/// rounded frame interval, frame 45 at 15 fps came 15 ns after 3 s, and a 3 s pre-roll lost a frame).
fn frame_pts(seq: u64, fps: f64) -> Duration {
    Duration::from_nanos((seq as f64 * 1e9 / fps).round() as u64)
}

/// Seconds, rounded to the millisecond.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}
