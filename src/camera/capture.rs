//! Decoding a camera's RTSP stream (or a video file) into I420 frames with GStreamer, with hard open and
//! read timeouts.
//!
//! `rtspsrc` (TCP: UDP loses packets on Wi-Fi) or `filesrc`, then `parsebin` (the camera's codec, H.264
//! or H.265, in whole access units), `decodebin` (libav) and an `appsink` that hands out the decoder's
//! own I420 planes. OpenCV's capture could only hand out BGR: the conversion there and back for the
//! encoder cost about as much as detection (docs/PERFORMANCE.md). Each frame comes with the packets it
//! was decoded from, taken by reference as they enter the decoder, for the recorder's pre-roll. The
//! password goes to `rtspsrc` as a property, never in its location, so GStreamer's messages cannot
//! carry it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;
use gstreamer_video::VideoInfo;
use opencv::core::Size;

use crate::config::CameraSettings;
use crate::decoding::{self, DECODE_TO_I420, Pulled};
use crate::gst_pipeline;
use crate::i420::I420Image;
use crate::stream::{Encoded, StreamInfo};

/// Frame rate assumed when a stream reports none and its first frames' timestamps tell none either.
const FALLBACK_FPS: f64 = 15.0;
/// Frames whose timestamps measure the rate of a stream that does not state it.
const RATE_PROBE_FRAMES: usize = 6;
/// How long `rtspsrc` buffers packets to put them in order (its default is 2 s; over TCP they arrive in
/// order, so this is only latency and memory).
const RTSP_LATENCY_MS: u32 = 200;
/// Decoding threads at most (see `decoding::limit_decoder_threads`). Two keep a Pi's 1080p30 decoding
/// on two cores.
const MAX_DECODER_THREADS: i32 = 2;
/// Packets waiting for their picture at most: far more than a decoder holds back, a bound for a decoder
/// that stopped giving pictures.
const MAX_QUEUED_PACKETS: usize = 300;

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

/// A decoded picture and the camera's packets it was decoded from.
pub struct CameraFrame {
    pub image: I420Image,
    pub encoded: Encoded,
}

/// An open stream that yields I420 frames.
pub struct CameraStream {
    pipeline: gst::Pipeline,
    sink: AppSink,
    packets: PacketQueue,
    info: StreamInfo,
    read_timeout: Duration,
    /// Frames read while opening (to learn the size and rate), handed out first.
    pending: VecDeque<CameraFrame>,
}

impl CameraStream {
    /// Opens the camera's stream and reads its first frame (whose size is the stream's size from then
    /// on); fails within the open timeout when the camera is not there or refuses, and within the read
    /// timeout when it sends nothing.
    pub fn open(settings: &CameraSettings) -> Result<Self, CaptureError> {
        let pipeline = launch(&format!(
            "rtspsrc name=source protocols=tcp latency={RTSP_LATENCY_MS} ! parsebin ! {DECODE_TO_I420}"
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
        let pipeline = launch(&format!(
            "filesrc name=source ! parsebin ! {DECODE_TO_I420}"
        ))?;
        by_name(&pipeline, "source")?.set_property("location", path.to_string_lossy().as_ref());
        let timeout = Duration::from_secs(10);
        Self::start(pipeline, timeout, timeout)
    }

    fn start(
        pipeline: gst::Pipeline,
        open_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, CaptureError> {
        let sink: AppSink =
            gst_pipeline::element_as(&pipeline, "sink").map_err(CaptureError::Gst)?;
        let packets = PacketQueue::default();
        packets.watch(&by_name(&pipeline, "decoder")?)?;
        let started = Instant::now();
        // Dropping `stream` stops the pipeline on every early return from here.
        let mut stream = Self {
            pipeline,
            sink,
            packets,
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
        stream.info.colorimetry = decoding::colorimetry(&video);
        if stream.info.size.width % 2 != 0 || stream.info.size.height % 2 != 0 {
            return Err(CaptureError::OddSize(stream.info.size));
        }
        let mut timestamps = vec![decoding::pts_of(&first)];
        let first_frame = stream.to_frame(&first)?;
        stream.pending.push_back(first_frame);
        let stated = f64::from(video.fps().numer()) / f64::from(video.fps().denom().max(1));
        stream.info.fps = if (1.0..=120.0).contains(&stated) {
            stated
        } else {
            while stream.pending.len() < RATE_PROBE_FRAMES {
                let sample = stream.pull(read_timeout)?;
                timestamps.push(decoding::pts_of(&sample));
                let frame = stream.to_frame(&sample)?;
                stream.pending.push_back(frame);
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
    pub fn read(&mut self) -> Result<CameraFrame, CaptureError> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        let sample = self.pull(self.read_timeout)?;
        self.to_frame(&sample)
    }

    /// Waits up to `timeout` for the next decoded sample, watching for errors and the end meanwhile.
    fn pull(&self, timeout: Duration) -> Result<gst::Sample, CaptureError> {
        match decoding::pull(&self.sink, &self.pipeline, timeout).map_err(CaptureError::Failed)? {
            Pulled::Picture(sample) => Ok(sample),
            Pulled::Ended => Err(CaptureError::Ended),
            Pulled::Nothing => Err(CaptureError::NoFrame { timeout }),
        }
    }

    /// The sample's picture, refused when the stream changed its size.
    fn to_image(&self, sample: &gst::Sample) -> Result<I420Image, CaptureError> {
        let image = decoding::image_from_sample(sample).map_err(CaptureError::Gst)?;
        if self.info.size.width != 0 && image.size() != self.info.size {
            return Err(CaptureError::SizeChanged {
                from: self.info.size,
                to: image.size(),
            });
        }
        Ok(image)
    }

    /// The sample's picture with the packets it was decoded from.
    fn to_frame(&self, sample: &gst::Sample) -> Result<CameraFrame, CaptureError> {
        Ok(CameraFrame {
            image: self.to_image(sample)?,
            encoded: self.packets.take_through(decoding::pts_of(sample)),
        })
    }
}

impl Drop for CameraStream {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn launch(description: &str) -> Result<gst::Pipeline, CaptureError> {
    let pipeline = gst_pipeline::launch(description).map_err(CaptureError::Gst)?;
    decoding::limit_decoder_threads(&pipeline, MAX_DECODER_THREADS);
    Ok(pipeline)
}

fn by_name(pipeline: &gst::Pipeline, name: &str) -> Result<gst::Element, CaptureError> {
    gst_pipeline::element(pipeline, name).map_err(CaptureError::Gst)
}

/// The packets on their way into the decoder, kept until the picture they make comes out.
#[derive(Clone, Default)]
struct PacketQueue(Arc<Mutex<VecDeque<gst::Sample>>>);

impl PacketQueue {
    /// Copies (by reference) every packet entering `decoder`, with its caps.
    fn watch(&self, decoder: &gst::Element) -> Result<(), CaptureError> {
        let pad = decoder
            .static_pad("sink")
            .ok_or_else(|| CaptureError::Gst("the decoder has no sink pad".into()))?;
        let queue = self.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
                let caps = pad.current_caps();
                let mut sample = gst::Sample::builder().buffer(buffer);
                if let Some(caps) = caps.as_ref() {
                    sample = sample.caps(caps);
                }
                queue.push(sample.build());
            }
            gst::PadProbeReturn::Ok
        });
        Ok(())
    }

    fn push(&self, packet: gst::Sample) {
        let mut queue = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if queue.len() == MAX_QUEUED_PACKETS {
            // Pictures stopped coming out (the read then times out): keep only the newest packets.
            queue.pop_front();
        }
        queue.push_back(packet);
    }

    /// The packets up to and including the last one with the picture's timestamp (a picture may come
    /// in several NAL units; the decoder gives it only once it has them all). All those with earlier or
    /// no timestamps when none has it; none when it came earlier, as a B-frame's reference does.
    fn take_through(&self, pts: Option<gst::ClockTime>) -> Encoded {
        let mut queue = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = match pts
            .and_then(|pts| queue.iter().rposition(|p| decoding::pts_of(p) == Some(pts)))
        {
            Some(own) => own + 1,
            None => queue
                .iter()
                .take_while(|p| match (decoding::pts_of(p), pts) {
                    (Some(packet), Some(picture)) => packet <= picture,
                    _ => true,
                })
                .count(),
        };
        Encoded {
            packets: queue.drain(..count).collect(),
            pts,
        }
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
    fn each_picture_takes_the_packets_up_to_its_own() {
        gst::init().unwrap();
        let packet = |ms: Option<u64>| {
            let mut buffer = gst::Buffer::with_size(1).unwrap();
            buffer
                .get_mut()
                .unwrap()
                .set_pts(ms.map(gst::ClockTime::from_mseconds));
            gst::Sample::builder().buffer(&buffer).build()
        };
        let queue = PacketQueue::default();
        let taken = |ms: u64| {
            queue
                .take_through(Some(gst::ClockTime::from_mseconds(ms)))
                .packets
                .len()
        };
        // Decode order I0 P3 B1 B2 (times in 100 ms), P3 in two NAL units.
        for ms in [0, 300, 300, 100, 200] {
            queue.push(packet(Some(ms)));
        }
        assert_eq!(taken(0), 1);
        assert_eq!(taken(100), 3, "P3's two units, then B1");
        assert_eq!(taken(200), 1);
        assert_eq!(taken(300), 0, "P3 went with B1");
        queue.push(packet(None));
        queue.push(packet(Some(400)));
        queue.push(packet(Some(600)));
        assert_eq!(
            taken(500),
            2,
            "no packet has the picture's time: the earlier and untimed ones"
        );
    }

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
