//! The messages on the pipeline's arrows: a camera's frames, the detector's verdicts, and the stream
//! boundaries (connected, lost) that travel with them so every stage sees a reconnect in order.

use std::time::{Duration, SystemTime};

use gstreamer as gst;
use opencv::core::{Rect, Size};

use crate::i420::{Colorimetry, I420Image};

/// When a frame was captured: `pts` is monotonic time since the source started (durations are measured
/// with it; it never jumps), `wall` is UTC wall-clock time (clip names use it; it may jump when NTP syncs).
#[derive(Debug, Clone, Copy)]
pub struct Timestamp {
    pub pts: Duration,
    pub wall: SystemTime,
}

/// One decoded picture, I420, at the camera's resolution, with the camera's packets it came from.
pub struct Frame {
    pub image: I420Image,
    pub seq: u64,
    pub at: Timestamp,
    pub encoded: Encoded,
}

/// The camera's encoded packets behind a frame, in decode order: those that arrived since the previous
/// frame, up to its own. Where frames wait long (the pre-roll) they are kept instead of the picture: a
/// second of 1080p30 is about 90 MiB of pictures and well under 1 MiB of packets. Empty for a source
/// that gives no packets.
#[derive(Clone, Default)]
pub struct Encoded {
    /// Each packet with its caps (the codec and its parameters, from the camera's parser).
    pub packets: Vec<gst::Sample>,
    /// The decoded frame's stream timestamp: a decoder fed these packets gives the picture it again.
    pub pts: Option<gst::ClockTime>,
}

impl Encoded {
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// True when decoding can start here: the first packet is a keyframe.
    pub fn starts_with_keyframe(&self) -> bool {
        self.packets
            .first()
            .and_then(|packet| packet.buffer())
            .is_some_and(|buffer| !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT))
    }

    pub fn byte_len(&self) -> u64 {
        self.packets
            .iter()
            .filter_map(|packet| packet.buffer())
            .map(|buffer| buffer.size() as u64)
            .sum()
    }

    /// Puts the packets of an earlier frame (one that was dropped) in front of these.
    pub fn prepend(&mut self, earlier: Encoded) {
        let later = std::mem::replace(&mut self.packets, earlier.packets);
        self.packets.extend(later);
    }
}

/// A frame with the moving regions the detector found in it, in full-resolution pixels.
pub struct Verdict {
    pub frame: Frame,
    pub boxes: Vec<Rect>,
    /// True while the detector is still learning the background: motion then never starts a clip.
    pub warming_up: bool,
    /// True when motion was found on `MIN_MOTION_FRAMES` analysed frames in a row, up to this one: a
    /// single noisy frame shows its boxes but is not motion.
    pub sustained: bool,
}

impl Verdict {
    /// Motion that counts: boxes, past warm-up, and sustained.
    pub fn has_motion(&self) -> bool {
        !self.warming_up && self.sustained && !self.boxes.is_empty()
    }
}

/// What a source is delivering: its frame size and real frame rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamInfo {
    pub size: Size,
    pub fps: f64,
    /// How the frames' YUV values are meant: the clips are marked with it, and boxes drawn in it.
    pub colorimetry: Colorimetry,
}

impl StreamInfo {
    /// A stream of BT.601 limited-range frames (what most cameras send).
    pub fn new(size: Size, fps: f64) -> Self {
        Self {
            size,
            fps,
            colorimetry: Colorimetry::default(),
        }
    }
}

/// Items of one stage's output, with the stream's boundaries in order.
pub enum StreamEvent<T> {
    /// A (re)connected stream: what follows belongs to it.
    Started(StreamInfo),
    Item(T),
    /// The stream ended (camera lost, file over): an open clip must be closed now.
    Ended {
        reason: String,
    },
}
