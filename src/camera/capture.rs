//! Opening an RTSP stream with OpenCV's FFmpeg backend, with hard open and read timeouts.

use std::time::Duration;

use opencv::core::{Mat, MatTraitConst, Size, Vector};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};

use crate::config::CameraSettings;
use crate::stream::StreamInfo;

/// Set before any capture is opened: TCP transport (UDP loses packets on Wi-Fi) and a short stream probe.
pub const FFMPEG_CAPTURE_OPTIONS: &str =
    "rtsp_transport;tcp|analyzeduration;1000000|probesize;500000";

/// Frame rate assumed when a stream reports none or a nonsense one.
const FALLBACK_FPS: f64 = 15.0;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "could not open the stream (gave up after {:.1} s: camera off or unreachable, wrong path, or wrong user/password)",
        .after.as_secs_f64()
    )]
    OpenFailed { after: Duration },
    #[error("the stream delivered no frame within {timeout:?} (camera frozen or gone)")]
    NoFrame { timeout: Duration },
    #[error("the frame size changed from {from:?} to {to:?}")]
    SizeChanged { from: Size, to: Size },
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
}

/// An open camera stream.
pub struct CameraStream {
    capture: VideoCapture,
    info: StreamInfo,
    read_timeout: Duration,
    /// The frame read while opening, handed out by the first `read`.
    first_frame: Option<Mat>,
}

impl CameraStream {
    /// Opens the stream and reads its first frame (whose size is the stream's size from then on); fails
    /// within the open timeout when the camera is not there, or the read timeout when it sends nothing.
    pub fn open(settings: &CameraSettings) -> Result<Self, CaptureError> {
        let params = Vector::<i32>::from_slice(&[
            videoio::CAP_PROP_OPEN_TIMEOUT_MSEC,
            millis(settings.open_timeout),
            videoio::CAP_PROP_READ_TIMEOUT_MSEC,
            millis(settings.read_timeout),
        ]);
        let started = std::time::Instant::now();
        let capture = VideoCapture::from_file_with_params(
            settings.url.expose(),
            videoio::CAP_FFMPEG,
            &params,
        )?;
        if !capture.is_opened()? {
            return Err(CaptureError::OpenFailed {
                after: started.elapsed(),
            });
        }
        let mut stream = Self {
            info: stream_info(&capture)?,
            capture,
            read_timeout: settings.read_timeout,
            first_frame: None,
        };
        let first = stream.read_decoded()?;
        stream.info.size = first.size()?;
        stream.first_frame = Some(first);
        Ok(stream)
    }

    pub fn info(&self) -> StreamInfo {
        self.info
    }

    /// The next frame; an error when the stream ended, stalled past the read timeout, or changed its
    /// resolution (a reconnect then starts everything afresh at the new size).
    pub fn read(&mut self) -> Result<Mat, CaptureError> {
        if let Some(first) = self.first_frame.take() {
            return Ok(first);
        }
        let image = self.read_decoded()?;
        let size = image.size()?;
        if size != self.info.size {
            return Err(CaptureError::SizeChanged {
                from: self.info.size,
                to: size,
            });
        }
        Ok(image)
    }

    fn read_decoded(&mut self) -> Result<Mat, CaptureError> {
        let mut image = Mat::default();
        if self.capture.read(&mut image)? && !image.empty() {
            Ok(image)
        } else {
            Err(CaptureError::NoFrame {
                timeout: self.read_timeout,
            })
        }
    }
}

/// Size and frame rate as the backend reports them, the rate checked for sanity.
pub fn stream_info(capture: &VideoCapture) -> opencv::Result<StreamInfo> {
    // The properties are doubles holding whole pixel counts.
    let width = capture.get(videoio::CAP_PROP_FRAME_WIDTH)? as i32;
    let height = capture.get(videoio::CAP_PROP_FRAME_HEIGHT)? as i32;
    let reported = capture.get(videoio::CAP_PROP_FPS)?;
    let fps = if (1.0..=120.0).contains(&reported) {
        reported
    } else {
        tracing::warn!(
            reported,
            assumed = FALLBACK_FPS,
            "stream reports no usable frame rate"
        );
        FALLBACK_FPS
    };
    Ok(StreamInfo {
        size: Size::new(width, height),
        fps,
    })
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}
