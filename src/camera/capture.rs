//! Decoding a camera's RTSP stream (or a video file) into I420 frames with GStreamer, with hard open and
//! read timeouts.
//!
//! `rtspsrc` (TCP: UDP loses packets on Wi-Fi) or `filesrc`, then `decodebin` (the camera's codec, H.264
//! or H.265, through libav) and an `appsink` that hands out the decoder's own I420 planes. OpenCV's
//! capture could only hand out BGR: the conversion there and back for the encoder cost about as much as
//! detection (docs/PERFORMANCE.md). `videoconvert` passes I420 through untouched and converts only a
//! decoder that gives something else. The password goes to `rtspsrc` as a property, never in its location,
//! so GStreamer's messages cannot carry it.

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;
use gstreamer_video::prelude::*;
use gstreamer_video::{VideoFrameRef, VideoInfo};
use opencv::core::Size;

use crate::config::CameraSettings;
use crate::gst_pipeline;
use crate::i420::{Colorimetry, ColourMatrix, I420Image};
use crate::stream::StreamInfo;

/// Frame rate assumed when a stream reports none and its first frames' timestamps tell none either.
const FALLBACK_FPS: f64 = 15.0;
/// Frames whose timestamps measure the rate of a stream that does not state it.
const RATE_PROBE_FRAMES: usize = 6;
/// How long `rtspsrc` buffers packets to put them in order (its default is 2 s; over TCP they arrive in
/// order, so this is only latency and memory).
const RTSP_LATENCY_MS: u32 = 200;
/// Decoding threads at most. libav's automatic count is one per core plus one, and every thread of its
/// frame threading holds its own frames: about 20 MB each at 1080p. Two keep a Pi's 1080p30 decoding on
/// two cores.
const MAX_DECODER_THREADS: i32 = 2;
/// How often a wait for a frame looks at the pipeline's messages (errors, end of stream).
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("could not open the stream (gave up after {:.1} s: {reason})", .after.as_secs_f64())]
    OpenFailed { after: Duration, reason: String },
    #[error("the stream delivered no frame within {timeout:?} (camera frozen or gone)")]
    NoFrame { timeout: Duration },
    #[error("the stream ended")]
    Ended,
    #[error("the stream failed: {0}")]
    Failed(String),
    #[error("the frame size changed from {from:?} to {to:?}")]
    SizeChanged { from: Size, to: Size },
    #[error(
        "the stream is {}x{}; H.264 clips need an even width and height",
        .0.width, .0.height
    )]
    OddSize(Size),
    #[error("GStreamer: {0}")]
    Gst(String),
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
}

impl From<gst::glib::BoolError> for CaptureError {
    fn from(error: gst::glib::BoolError) -> Self {
        Self::Gst(error.to_string())
    }
}

impl From<gst::StateChangeError> for CaptureError {
    fn from(error: gst::StateChangeError) -> Self {
        Self::Gst(error.to_string())
    }
}

/// An open stream that yields I420 frames.
pub struct CameraStream {
    pipeline: gst::Pipeline,
    sink: AppSink,
    info: StreamInfo,
    read_timeout: Duration,
    /// Frames read while opening (to learn the size and rate), handed out first.
    pending: std::collections::VecDeque<I420Image>,
}

impl CameraStream {
    /// Opens the camera's stream and reads its first frame (whose size is the stream's size from then
    /// on); fails within the open timeout when the camera is not there or refuses, and within the read
    /// timeout when it sends nothing.
    pub fn open(settings: &CameraSettings) -> Result<Self, CaptureError> {
        let pipeline = launch(&format!(
            "rtspsrc name=source protocols=tcp latency={RTSP_LATENCY_MS} ! {DECODE}"
        ))?;
        let source = by_name(&pipeline, "source")?;
        let url = super::credentials::split(settings.url.expose())
            .map_err(|e| CaptureError::Gst(format!("the camera URL: {e}")))?;
        source.set_property("location", url.address.as_str());
        if !url.user.is_empty() {
            source.set_property("user-id", url.user.as_str());
        }
        if let Some(password) = url.password {
            source.set_property("user-pw", password.as_str());
        }
        Self::start(pipeline, settings.open_timeout, settings.read_timeout)
    }

    /// Opens a video file, decoded as fast as it can be (no pacing).
    pub fn open_file(path: &std::path::Path) -> Result<Self, CaptureError> {
        let pipeline = launch(&format!("filesrc name=source ! {DECODE}"))?;
        by_name(&pipeline, "source")?.set_property("location", path.to_string_lossy().as_ref());
        let timeout = Duration::from_secs(10);
        Self::start(pipeline, timeout, timeout)
    }

    fn start(
        pipeline: gst::Pipeline,
        open_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, CaptureError> {
        let sink = by_name(&pipeline, "sink")?
            .dynamic_cast::<AppSink>()
            .map_err(|_| CaptureError::Gst("the sink is not an appsink".into()))?;
        let started = Instant::now();
        // Dropping `stream` stops the pipeline on every early return from here.
        let mut stream = Self {
            pipeline,
            sink,
            info: StreamInfo::new(Size::new(0, 0), FALLBACK_FPS),
            read_timeout,
            pending: Default::default(),
        };
        stream.pipeline.set_state(gst::State::Playing)?;
        let opened = |error: CaptureError| {
            let reason = match error {
                CaptureError::NoFrame { .. } | CaptureError::Ended => {
                    "camera off or unreachable, wrong path, or wrong user/password".into()
                }
                CaptureError::Failed(reason) => reason,
                other => return other,
            };
            CaptureError::OpenFailed {
                after: started.elapsed(),
                reason,
            }
        };
        let first = stream.pull(open_timeout).map_err(opened)?;
        let caps = first
            .caps()
            .ok_or_else(|| CaptureError::Gst("no caps".into()))?;
        let video = VideoInfo::from_caps(caps)?;
        stream.info.size = Size::new(video.width() as i32, video.height() as i32);
        stream.info.colorimetry = colorimetry(&video);
        if stream.info.size.width % 2 != 0 || stream.info.size.height % 2 != 0 {
            return Err(CaptureError::OddSize(stream.info.size));
        }
        let mut timestamps = vec![first.buffer().and_then(|b| b.pts())];
        let first_image = stream.to_image(&first)?;
        stream.pending.push_back(first_image);
        let stated = f64::from(video.fps().numer()) / f64::from(video.fps().denom().max(1));
        stream.info.fps = if (1.0..=120.0).contains(&stated) {
            stated
        } else {
            while stream.pending.len() < RATE_PROBE_FRAMES {
                let sample = stream.pull(read_timeout)?;
                timestamps.push(sample.buffer().and_then(|b| b.pts()));
                let image = stream.to_image(&sample)?;
                stream.pending.push_back(image);
            }
            rate_from_timestamps(&timestamps)
        };
        Ok(stream)
    }

    pub fn info(&self) -> StreamInfo {
        self.info
    }

    /// The next frame; an error when the stream ended, stalled past the read timeout, failed, or
    /// changed its resolution (a reconnect then starts everything afresh at the new size).
    pub fn read(&mut self) -> Result<I420Image, CaptureError> {
        if let Some(image) = self.pending.pop_front() {
            return Ok(image);
        }
        let sample = self.pull(self.read_timeout)?;
        self.to_image(&sample)
    }

    /// Waits up to `timeout` for the next decoded sample, watching for errors and the end meanwhile.
    fn pull(&self, timeout: Duration) -> Result<gst::Sample, CaptureError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = gst::ClockTime::from_nseconds(left.min(POLL).as_nanos() as u64);
            if let Some(sample) = self.sink.try_pull_sample(wait) {
                return Ok(sample);
            }
            if let Some(failure) = self.failure() {
                return Err(failure);
            }
            if self.sink.is_eos() {
                return Err(CaptureError::Ended);
            }
            if left.is_zero() {
                return Err(CaptureError::NoFrame { timeout });
            }
        }
    }

    /// The pipeline's first error, if it reported one.
    fn failure(&self) -> Option<CaptureError> {
        gst_pipeline::first_error(&self.pipeline).map(CaptureError::Failed)
    }

    /// The sample's planes copied into a packed I420 image (the decoder pads rows to its alignment).
    fn to_image(&self, sample: &gst::Sample) -> Result<I420Image, CaptureError> {
        let caps = sample
            .caps()
            .ok_or_else(|| CaptureError::Gst("a frame without caps".into()))?;
        let video = VideoInfo::from_caps(caps)?;
        let size = Size::new(video.width() as i32, video.height() as i32);
        if self.info.size.width != 0 && size != self.info.size {
            return Err(CaptureError::SizeChanged {
                from: self.info.size,
                to: size,
            });
        }
        let buffer = sample
            .buffer()
            .ok_or_else(|| CaptureError::Gst("a sample without a buffer".into()))?;
        let frame = VideoFrameRef::from_buffer_ref_readable(buffer, &video)
            .map_err(|_| CaptureError::Gst("cannot map a decoded frame".into()))?;
        let (w, h) = (size.width as usize, size.height as usize);
        let mut planes = Vec::with_capacity(3);
        for (plane, shape) in [(w, h), (w / 2, h / 2), (w / 2, h / 2)]
            .into_iter()
            .enumerate()
        {
            let data = frame
                .plane_data(plane as u32)
                .map_err(|e| CaptureError::Gst(e.to_string()))?;
            planes.push((data, frame.plane_stride()[plane] as usize, shape));
        }
        let mut image = I420Image::from_writer(size, |out| {
            let mut offset = 0;
            for (data, stride, (width, height)) in planes {
                for row in 0..height {
                    let from = row * stride;
                    out[offset..offset + width].copy_from_slice(&data[from..from + width]);
                    offset += width;
                }
            }
        })?;
        image.set_colorimetry(colorimetry(&video));
        Ok(image)
    }
}

impl Drop for CameraStream {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Whatever the source gives, decoded to I420 for the appsink. `sync=false`: frames are handed out as
/// they are decoded (a live camera paces itself; a file is read as fast as it decodes).
const DECODE: &str = "decodebin ! videoconvert ! video/x-raw,format=I420 \
     ! appsink name=sink sync=false max-buffers=2";

fn launch(description: &str) -> Result<gst::Pipeline, CaptureError> {
    let pipeline = gst_pipeline::launch(description).map_err(CaptureError::Gst)?;
    // The decoder is chosen by `decodebin` once the stream's codec is known.
    pipeline.connect_deep_element_added(|_, _, element| {
        if element.has_property("max-threads") {
            element.set_property("max-threads", MAX_DECODER_THREADS);
        }
    });
    Ok(pipeline)
}

fn by_name(pipeline: &gst::Pipeline, name: &str) -> Result<gst::Element, CaptureError> {
    gst_pipeline::element(pipeline, name).map_err(CaptureError::Gst)
}

/// The stream's matrix and range as the decoder reports them (BT.601 for anything but BT.709).
fn colorimetry(video: &VideoInfo) -> Colorimetry {
    let colorimetry = video.colorimetry();
    Colorimetry {
        matrix: match colorimetry.matrix() {
            gstreamer_video::VideoColorMatrix::Bt709 => ColourMatrix::Bt709,
            _ => ColourMatrix::Bt601,
        },
        full_range: colorimetry.range() == gstreamer_video::VideoColorRange::Range0_255,
    }
}

/// Frames a second from the first frames' timestamps (the median interval), for a stream that does not
/// state its rate.
fn rate_from_timestamps(timestamps: &[Option<gst::ClockTime>]) -> f64 {
    let mut intervals: Vec<u64> = timestamps
        .windows(2)
        .filter_map(|pair| pair[1]?.nseconds().checked_sub(pair[0]?.nseconds()))
        .filter(|&ns| ns > 0)
        .collect();
    intervals.sort_unstable();
    let rate = intervals
        .get(intervals.len() / 2)
        .map(|&ns| 1e9 / ns as f64)
        .filter(|rate| (1.0..=120.0).contains(rate));
    rate.unwrap_or_else(|| {
        tracing::warn!(
            assumed = FALLBACK_FPS,
            "stream reports no usable frame rate"
        );
        FALLBACK_FPS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_read_from_timestamps_and_nonsense_falls_back() {
        let at = |ms: u64| Some(gst::ClockTime::from_mseconds(ms));
        assert_eq!(
            rate_from_timestamps(&[at(0), at(40), at(80), at(160), at(200)]),
            25.0
        );
        assert_eq!(rate_from_timestamps(&[at(0), None]), FALLBACK_FPS);
        assert_eq!(rate_from_timestamps(&[at(0), at(0)]), FALLBACK_FPS);
    }
}
