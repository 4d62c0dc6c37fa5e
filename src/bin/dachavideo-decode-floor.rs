//! `dachavideo-decode-floor VIDEO`: the benchmark's floor in a process of its own. OpenCV's FFmpeg capture
//! reads every frame (into BGR, as OpenCV always does) and nothing else; prints the bench's JSON report
//! (`dachavideo bench decode VIDEO` runs this and passes it on).
//!
//! A binary apart so that the service does not link OpenCV's videoio, which pulls in imgcodecs, GDAL and
//! some 80 more libraries the service never uses (25 MB of resident memory at start; docs/PERFORMANCE.md).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use dachavideo::bench::{BenchMode, BenchReport, Measurement};
use dachavideo::stream::StreamInfo;
use opencv::core::{Mat, Size};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};

fn main() -> ExitCode {
    let Some(video) = std::env::args_os().nth(1) else {
        eprintln!("usage: dachavideo-decode-floor VIDEO");
        return ExitCode::from(2);
    };
    let report = decode_with_opencv(Path::new(&video))
        .and_then(|report| serde_json::to_string(&report).context("the report as JSON"));
    match report {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dachavideo-decode-floor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn decode_with_opencv(video: &Path) -> anyhow::Result<BenchReport> {
    let mut capture = VideoCapture::from_file(video, videoio::CAP_FFMPEG)
        .with_context(|| format!("opening {}", video.display()))?;
    if !capture.is_opened()? {
        bail!("{}: cannot open as a video", video.display());
    }
    let info = StreamInfo::new(
        Size::new(
            capture.get(videoio::CAP_PROP_FRAME_WIDTH)? as i32,
            capture.get(videoio::CAP_PROP_FRAME_HEIGHT)? as i32,
        ),
        capture.get(videoio::CAP_PROP_FPS)?,
    );
    let measure = Measurement::start();
    let (mut frames, mut image) = (0_u64, Mat::default());
    while capture.read(&mut image)? && !image.empty() {
        frames += 1;
    }
    Ok(measure.report(video, BenchMode::Decode, info, frames))
}
