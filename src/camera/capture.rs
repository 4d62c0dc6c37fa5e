//! Decoding a camera's RTSP stream (or a video file) into I420 frames with GStreamer, with hard open and
//! read timeouts.
//!
//! `rtspsrc` (TCP: UDP loses packets on Wi-Fi) or `filesrc`, then `parsebin` (as far as the camera's
//! codec), `h264parse` or `h265parse` (whole access units) and an `appsink` that hands out the packets,
//! which libavcodec decodes to I420 planes (`decoding::Decoder`). OpenCV's capture could only hand out BGR: the
//! conversion there and back for the encoder cost about as much as detection (docs/PERFORMANCE.md).
//! Each frame comes with the packets it was decoded from, for the recorder's pre-roll. The password goes
//! to `rtspsrc` as a property, never in its location, so GStreamer's messages cannot carry it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;
use opencv::core::Size;
use tracing::debug;

use crate::config::CameraSettings;
use crate::decoding::{self, Decoder, PARSED_PACKETS, Pulled, TimedPicture};
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
/// Decoding threads (frame threading: each holds its own pictures, about 3 MiB each at 1080p). Two
/// keep a Pi's 1080p30 decoding on two cores.
const DECODER_THREADS: usize = 2;
/// Damaged packets in a row that end the stream (a reconnect starts afresh): a second or more of a
/// camera's frames, far more than a Wi-Fi drop-out damages.
const MAX_DAMAGED_PACKETS: u32 = 60;
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
    #[error("GStreamer: {0}")]
    Gst(String),
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
    #[error("{0}")]
    Decode(#[from] decoding::DecodeError),
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
    /// Opened with the first packet's caps.
    decoder: Option<Decoder>,
    packets: PacketQueue,
    info: StreamInfo,
    read_timeout: Duration,
    /// Frames read while opening (to learn the size and rate), handed out first.
    pending: VecDeque<CameraFrame>,
    /// The source ended, and the decoder was told (it gives out what it still holds).
    ended: bool,
    /// Packets in a row the decoder could not decode.
    damaged: u32,
}

impl CameraStream {
    /// Opens the camera's stream and reads its first frame (whose size is the stream's size from then
    /// on); fails within the open timeout when the camera is not there or refuses, and within the read
    /// timeout when it sends nothing.
    pub fn open(settings: &CameraSettings) -> Result<Self, CaptureError> {
        let pipeline = launch(&format!(
            "rtspsrc name=source protocols=tcp latency={RTSP_LATENCY_MS}"
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
        let pipeline = launch("filesrc name=source")?;
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
        let started = Instant::now();
        // Dropping `stream` stops the pipeline on every early return from here.
        let mut stream = Self {
            pipeline,
            sink,
            decoder: None,
            packets: PacketQueue::default(),
            info: StreamInfo::new(Size::new(0, 0), FALLBACK_FPS),
            read_timeout,
            pending: Default::default(),
            ended: false,
            damaged: 0,
        };
        stream.pipeline.set_state(gst::State::Playing)?;
        let opened = |error: CaptureError| {
            let reason = match error {
                CaptureError::NoFrame { .. } | CaptureError::Ended => {
                    "camera off or unreachable, wrong path, or wrong user/password".into()
                }
                // The parser's output fits no caps the reader takes.
                CaptureError::Failed(reason)
                    if reason.contains("(not-linked)") || reason.contains("(not-negotiated)") =>
                {
                    format!("the stream is not H.264 or H.265; GStreamer: {reason}")
                }
                CaptureError::Failed(reason) => reason,
                other => return other,
            };
            CaptureError::OpenFailed {
                after: started.elapsed(),
                reason,
            }
        };
        let first = stream.next_picture(open_timeout).map_err(opened)?;
        stream.info.size = first.1.size();
        stream.info.colorimetry = first.1.colorimetry();
        let mut timestamps = vec![first.0];
        let first_frame = stream.frame_of(first)?;
        stream.pending.push_back(first_frame);
        let stated = stream.stated_rate();
        stream.info.fps = if (1.0..=120.0).contains(&stated) {
            stated
        } else {
            while stream.pending.len() < RATE_PROBE_FRAMES {
                let picture = stream.next_picture(read_timeout)?;
                timestamps.push(picture.0);
                let frame = stream.frame_of(picture)?;
                stream.pending.push_back(frame);
            }
            rate_from_timestamps(&timestamps)
        };
        Ok(stream)
    }

    /// The frame rate the stream's caps state (0 when they state none).
    fn stated_rate(&self) -> f64 {
        let rate = self
            .sink
            .sink_pads()
            .first()
            .and_then(|pad| pad.current_caps())
            .and_then(|caps| caps.structure(0)?.get::<gst::Fraction>("framerate").ok());
        rate.map_or(0.0, |rate| {
            f64::from(rate.numer()) / f64::from(rate.denom().max(1))
        })
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
        let picture = self.next_picture(self.read_timeout)?;
        self.frame_of(picture)
    }

    /// Waits up to `timeout` for the next decoded picture, decoding the packets as they come and
    /// watching for errors and the end meanwhile.
    fn next_picture(&mut self, timeout: Duration) -> Result<TimedPicture, CaptureError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(picture) = self.decoder.as_mut().and_then(Decoder::next_picture) {
                return Ok(picture);
            }
            if self.ended {
                return Err(CaptureError::Ended);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match decoding::pull(&self.sink, &self.pipeline, left).map_err(CaptureError::Failed)? {
                Pulled::Packet(packet) => self.decode(packet)?,
                Pulled::Ended => {
                    self.ended = true;
                    if let Some(decoder) = self.decoder.as_mut() {
                        decoder.send_end()?;
                    }
                }
                Pulled::Nothing => return Err(CaptureError::NoFrame { timeout }),
            }
        }
    }

    /// Decodes one packet and keeps it for the picture it makes. A damaged packet is skipped (the
    /// decoder recovers at the next keyframe); many in a row fail the stream.
    fn decode(&mut self, packet: gst::Sample) -> Result<(), CaptureError> {
        let decoder = match &mut self.decoder {
            Some(decoder) => decoder,
            None => {
                let caps = packet
                    .caps()
                    .ok_or_else(|| CaptureError::Gst("a packet without caps".into()))?;
                self.decoder.insert(Decoder::open(caps, DECODER_THREADS)?)
            }
        };
        let decoded = decoder.send(&packet);
        self.packets.push(packet);
        match decoded {
            Ok(()) => self.damaged = 0,
            Err(e) => {
                self.damaged += 1;
                if self.damaged >= MAX_DAMAGED_PACKETS {
                    return Err(CaptureError::Failed(format!(
                        "{} packets in a row could not be decoded; the last: {e}",
                        self.damaged
                    )));
                }
                debug!(error = %e, "a damaged packet was skipped");
            }
        }
        Ok(())
    }

    /// The picture with the packets it was decoded from; refused when the stream changed its size.
    fn frame_of(&mut self, (pts, image): TimedPicture) -> Result<CameraFrame, CaptureError> {
        if image.size() != self.info.size {
            return Err(CaptureError::SizeChanged {
                from: self.info.size,
                to: image.size(),
            });
        }
        Ok(CameraFrame {
            image,
            encoded: self.packets.take_through(pts),
        })
    }
}

impl Drop for CameraStream {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// `source`, then `parsebin` as far as the codec (the demuxer's or the RTP depayloader's output), then
/// the codec's own parser (`h264parse` or `h265parse`), linked when the stream shows up, into the
/// appsink of `PARSED_PACKETS`. Left to itself, parsebin would plug that parser too, but it hands out a
/// stream only once it sees a decoder for it installed (the container image has none: libavcodec
/// decodes), and then fixes the parser's output to its input's form (an RTP camera's NAL units) instead
/// of the whole access units the appsink takes. A stream in another codec is left unlinked: GStreamer
/// stops it ("not-linked").
fn launch(source: &str) -> Result<gst::Pipeline, CaptureError> {
    let pipeline = gst_pipeline::launch(&format!(
        "{source} ! parsebin name=demuxer  {PARSED_PACKETS}"
    ))
    .map_err(CaptureError::Gst)?;
    let demuxer = by_name(&pipeline, "demuxer")?;
    demuxer.connect("autoplug-continue", false, |values| {
        let codec = values
            .get(2)
            .and_then(|caps| caps.get::<gst::Caps>().ok())
            .and_then(|caps| codec_parser(&caps));
        Some(codec.is_none().to_value())
    });
    let sink = by_name(&pipeline, "sink")?;
    let weak_pipeline = pipeline.downgrade();
    demuxer.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak_pipeline.upgrade() else {
            return;
        };
        if let Err(e) = link_through_parser(&pipeline, pad, &sink) {
            debug!(error = %e, "the camera's stream is not linked");
        }
    });
    Ok(pipeline)
}

/// The parser element for a stream of `caps`, when it is H.264 or H.265.
fn codec_parser(caps: &gst::CapsRef) -> Option<&'static str> {
    match caps.structure(0)?.name().as_str() {
        "video/x-h264" => Some("h264parse"),
        "video/x-h265" => Some("h265parse"),
        _ => None,
    }
}

/// Links `pad` through its codec's parser into `sink`.
fn link_through_parser(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    sink: &gst::Element,
) -> Result<(), String> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let name = codec_parser(&caps).ok_or_else(|| format!("a stream of {caps}"))?;
    let parser = gst::ElementFactory::make(name)
        .build()
        .map_err(|e| format!("{name}: {e}"))?;
    pipeline.add(&parser).map_err(|e| e.to_string())?;
    parser.link(sink).map_err(|e| e.to_string())?;
    parser.sync_state_with_parent().map_err(|e| e.to_string())?;
    let parser_sink = parser
        .static_pad("sink")
        .ok_or("a parser without a sink pad")?;
    pad.link(&parser_sink).map_err(|e| e.to_string())?;
    Ok(())
}

fn by_name(pipeline: &gst::Pipeline, name: &str) -> Result<gst::Element, CaptureError> {
    gst_pipeline::element(pipeline, name).map_err(CaptureError::Gst)
}

/// The packets given to the decoder, kept until the picture they make comes out.
#[derive(Default)]
struct PacketQueue(VecDeque<gst::Sample>);

impl PacketQueue {
    fn push(&mut self, packet: gst::Sample) {
        if self.0.len() == MAX_QUEUED_PACKETS {
            // Pictures stopped coming out (the read then times out): keep only the newest packets.
            self.0.pop_front();
        }
        self.0.push_back(packet);
    }

    /// The packets up to and including the last one with the picture's timestamp (a picture may come
    /// in several NAL units; the decoder gives it only once it has them all). All those with earlier or
    /// no timestamps when none has it; none when it came earlier, as a B-frame's reference does.
    fn take_through(&mut self, pts: Option<gst::ClockTime>) -> Encoded {
        let queue = &mut self.0;
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
        let mut queue = PacketQueue::default();
        let taken = |queue: &mut PacketQueue, ms: u64| {
            queue
                .take_through(Some(gst::ClockTime::from_mseconds(ms)))
                .packets
                .len()
        };
        // Decode order I0 P3 B1 B2 (times in 100 ms), P3 in two NAL units.
        for ms in [0, 300, 300, 100, 200] {
            queue.push(packet(Some(ms)));
        }
        assert_eq!(taken(&mut queue, 0), 1);
        assert_eq!(taken(&mut queue, 100), 3, "P3's two units, then B1");
        assert_eq!(taken(&mut queue, 200), 1);
        assert_eq!(taken(&mut queue, 300), 0, "P3 went with B1");
        queue.push(packet(None));
        queue.push(packet(Some(400)));
        queue.push(packet(Some(600)));
        assert_eq!(
            taken(&mut queue, 500),
            2,
            "no packet has the picture's time: the earlier and untimed ones"
        );
    }

    #[test]
    fn a_stream_in_another_codec_is_refused_by_name() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mjpeg = dir.path().join("mjpeg.mkv");
        crate::test_videos::lavfi_video(&mjpeg, "testsrc=size=64x48:rate=5", 5, &["-c:v", "mjpeg"]);
        let error = CameraStream::open_file(&mjpeg).err().unwrap().to_string();
        assert!(
            error.contains(
                "the stream is not H.264 or H.265; GStreamer: Internal data stream error. (not-linked)"
            ),
            "{error}"
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
