//! `dachavideo bench MODE VIDEO`: what one part of the pipeline costs on a video file, measured in this
//! process (CPU seconds from getrusage, so every thread counts; peak resident memory). `scripts/bench.sh`
//! runs each mode in its own process, side by side, and prints the ratios (docs/PERFORMANCE.md).
//!
//! Modes: `decode` (OpenCV reads every frame, nothing else: the floor the ratios are taken against; run
//! by the `dachavideo-decode-floor` binary next to this one, so that the service itself does not link
//! OpenCV's videoio),
//! `detect` (the service's decoding, GStreamer to I420, + motion detection: the cost while nothing
//! happens), `record` (decode + detection + boxes + H.264 encoding of every frame: the cost while
//! recording).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::camera::{CameraFrame, CameraStream, CaptureError};
use crate::config::MotionSettings;
use crate::motion::MotionStage;
use crate::recorder::{ClipWriter, draw_boxes};
use crate::stream::{Frame, StreamEvent, StreamInfo, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    Decode,
    Detect,
    Record,
}

/// One measurement, printed as a JSON line.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub video: String,
    pub mode: BenchMode,
    pub width: i32,
    pub height: i32,
    pub fps: f64,
    pub frames: u64,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub frames_per_second: f64,
    pub peak_rss_mib: f64,
    /// Minor page faults of the run (fresh pages touched: what a freshly mapped frame buffer costs).
    pub minor_faults: u64,
    /// Whole seconds of the video in which motion was found (detect and record modes).
    pub motion_seconds: Vec<u64>,
    /// Size of the encoded clip (record mode).
    pub clip_bytes: Option<u64>,
}

pub fn run(mode: BenchMode, video: &Path, motion: MotionSettings) -> anyhow::Result<BenchReport> {
    if mode == BenchMode::Decode {
        return decode_floor(video);
    }
    let mut source = CameraStream::open_file(video)
        .with_context(|| format!("{}: cannot open as a video", video.display()))?;
    let info = source.info();
    let scratch = tempfile::tempdir().context("a scratch folder for the encoded clip")?;
    let clip = scratch.path().join("bench.mp4");
    let mut writer = match mode {
        BenchMode::Record => Some(ClipWriter::create(
            &clip,
            info.size,
            info.fps,
            info.colorimetry,
        )?),
        _ => None,
    };
    let mut stage = MotionStage::new(motion);
    let mut motion_seconds = Vec::new();
    let measure = Measurement::start();
    stage.handle(StreamEvent::Started(info))?;
    let mut frames = 0_u64;
    loop {
        let CameraFrame { image, encoded } = match source.read() {
            Ok(frame) => frame,
            Err(CaptureError::Ended) => break,
            Err(error) => return Err(error).context("decoding"),
        };
        let second = (frames as f64 / info.fps) as u64;
        frames += 1;
        let pts = std::time::Duration::from_secs_f64(frames as f64 / info.fps);
        let frame = Frame {
            image,
            seq: frames,
            at: Timestamp {
                pts,
                wall: std::time::SystemTime::now(),
            },
            encoded,
        };
        if let StreamEvent::Item(mut verdict) = stage.handle(StreamEvent::Item(frame))? {
            if verdict.has_motion() && motion_seconds.last() != Some(&second) {
                motion_seconds.push(second);
            }
            if let Some(writer) = writer.as_mut() {
                draw_boxes(&mut verdict.frame.image, &verdict.boxes)?;
                writer.write(verdict.frame.image)?;
            }
        }
    }
    let mut clip_bytes = None;
    if let Some(writer) = writer {
        writer.finish()?;
        clip_bytes = Some(std::fs::metadata(&clip).context("the encoded clip")?.len());
    }
    let mut report = measure.report(video, mode, info, frames);
    report.motion_seconds = motion_seconds;
    report.clip_bytes = clip_bytes;
    Ok(report)
}

/// The binary that measures the floor (built with this one: `cargo build --release` builds both).
pub const DECODE_FLOOR_BIN: &str = "dachavideo-decode-floor";

/// The floor, measured in a process of its own: the `dachavideo-decode-floor` binary next to this one.
fn decode_floor(video: &Path) -> anyhow::Result<BenchReport> {
    let this = std::env::current_exe().context("the path of this binary")?;
    let floor = this.with_file_name(DECODE_FLOOR_BIN);
    let output = std::process::Command::new(&floor)
        .arg(video)
        .output()
        .with_context(|| {
            format!(
                "running {} (built by `cargo build --release` next to dachavideo)",
                floor.display()
            )
        })?;
    if !output.status.success() {
        bail!(
            "{}: {}",
            floor.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the report of {}", floor.display()))
}

/// Resources used from `start` to `report`.
pub struct Measurement {
    cpu_seconds: f64,
    minor_faults: u64,
    started: Instant,
}

impl Measurement {
    pub fn start() -> Self {
        Self {
            cpu_seconds: cpu_seconds(),
            minor_faults: minor_faults(),
            started: Instant::now(),
        }
    }

    pub fn report(
        &self,
        video: &Path,
        mode: BenchMode,
        info: StreamInfo,
        frames: u64,
    ) -> BenchReport {
        let wall_seconds = self.started.elapsed().as_secs_f64();
        BenchReport {
            video: video.display().to_string(),
            mode,
            width: info.size.width,
            height: info.size.height,
            fps: info.fps,
            frames,
            wall_seconds,
            cpu_seconds: cpu_seconds() - self.cpu_seconds,
            frames_per_second: frames as f64 / wall_seconds,
            peak_rss_mib: peak_rss_kib() as f64 / 1024.0,
            minor_faults: minor_faults() - self.minor_faults,
            motion_seconds: Vec::new(),
            clip_bytes: None,
        }
    }
}

/// User + system CPU time of this process, all threads.
fn cpu_seconds() -> f64 {
    let usage = rusage();
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

// c_long is 32-bit on armv7, which we ship for; i64 elsewhere.
#[allow(clippy::unnecessary_cast)]
fn peak_rss_kib() -> i64 {
    rusage().ru_maxrss as i64
}

#[allow(clippy::unnecessary_cast)]
fn minor_faults() -> u64 {
    rusage().ru_minflt as u64
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage fills the struct it is given; an all-zero rusage is a valid value to start from.
    unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    }
}
