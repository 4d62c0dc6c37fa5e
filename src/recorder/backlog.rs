//! Frames the recorder holds but has not written: the pre-roll while no clip is open, and while a clip
//! is open the frames waiting for the encoder.
//!
//! A waiting frame is kept as the camera's packets, not as its picture: seconds of 1080p30 pictures are
//! hundreds of MiB, their packets a few. Only the newest frame keeps its picture as well (the picture a
//! clip writes at once when nothing waits before it). The pre-roll is cut at a keyframe, so that its
//! packets can be decoded: when a clip opens, a second `Decoder` turns them back into pictures, those
//! older than the pre-roll only as the decoder's references. Once the clip has caught up with the camera
//! the decoder is closed and the pictures go to the encoder as the camera's decoder gave them. Pictures
//! are matched to frames by their stream timestamps, so B-frames (decoded out of order) and frames the
//! camera dropped (their packets came with the next frame) need nothing special, except at the end: a
//! decoder holds pictures back for reordering until more packets come, so when it has every packet
//! there is, its stream is ended to get them (`drain`), and the frames after that keep their pictures.
//! Frames of a source without packets keep their pictures.
//!
//! Encoding seconds of frames at once would stall the recorder and make the camera drop the very frames
//! that show the motion, so the backlog is written one frame per incoming frame and caught up when the
//! recorder is idle. It is bounded by time and by bytes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use opencv::core::Rect;
use tracing::{debug, warn};

use crate::decoding::{Decoder, TimedPicture};
use crate::i420::I420Image;
use crate::stream::{Encoded, Timestamp, Verdict};

/// Frames whose packets the decoder is given ahead of the one whose picture is wanted: a decoder may
/// hold a picture back until it has the next packet.
const FEED_AHEAD: usize = 2;
/// Frames it is given ahead at most while no picture comes: more than a stream with B-frames holds
/// back for reordering. A decoder that gives none by then is broken (the frames are left out), and
/// ending its stream (`drain`) never brings more pictures into memory at once than this.
const MAX_FEED_AHEAD: usize = 8;
/// Decoding threads: one, since frame threading would hold each picture back until more packets came,
/// and the pre-roll is decoded beside the live stream anyway.
const DECODER_THREADS: usize = 1;
/// Written frames remembered for the next pre-roll at most (a camera that sends keyframes rarely).
const MAX_REMEMBERED: usize = 600;

/// A frame ready for the encoder.
pub struct Ready {
    pub at: Timestamp,
    pub boxes: Vec<Rect>,
    pub image: I420Image,
}

struct Waiting {
    at: Timestamp,
    boxes: Vec<Rect>,
    image: Option<I420Image>,
    encoded: Encoded,
    /// Its packets went into the decoder.
    fed: bool,
    /// Written already (in the clip before): decoded only as a reference for the frames after it.
    written: bool,
}

impl Waiting {
    fn image_bytes(&self) -> u64 {
        self.image
            .as_ref()
            .map_or(0, |image| image.byte_len() as u64)
    }

    fn bytes(&self) -> u64 {
        self.image_bytes() + self.encoded.byte_len()
    }
}

#[derive(Default)]
pub struct Backlog {
    frames: VecDeque<Waiting>,
    bytes: u64,
    /// Frames before this stream time are kept for decoding only (the pre-roll was cut here).
    write_from: Duration,
    decoder: Option<Decoder>,
    /// Pictures the decoder gave before the frames they belong to were wanted.
    decoded: VecDeque<TimedPicture>,
    /// The decoder had all the packets there were and gave out the pictures it held back (B-frames):
    /// it takes no more, so the frames that come now keep their own pictures.
    drained: bool,
    /// This stream's frames come with packets (otherwise they keep their pictures).
    packets_seen: bool,
    /// The packets of the frames written since the last keyframe: the next pre-roll may need them to
    /// decode its first frames.
    references: VecDeque<Waiting>,
    /// When the decoder started, and the pictures it gave.
    decoding_since: Option<(Instant, u64)>,
    /// The decoder was closed because the clip caught up with the camera (its memory is free now).
    caught_up: bool,
}

impl Backlog {
    /// Takes a frame in. The frame before it keeps only its packets (when the stream has packets and
    /// a decoder can still take them).
    pub fn push(&mut self, verdict: Verdict) {
        self.packets_seen |= !verdict.frame.encoded.is_empty();
        if self.packets_seen
            && !self.drained
            && let Some(previous) = self.frames.back_mut()
        {
            self.bytes -= previous.image_bytes();
            previous.image = None;
        }
        let waiting = Waiting {
            at: verdict.frame.at,
            boxes: verdict.boxes,
            image: Some(verdict.frame.image),
            encoded: verdict.frame.encoded,
            fed: false,
            written: false,
        };
        self.bytes += waiting.bytes();
        self.frames.push_back(waiting);
    }

    /// The oldest frame to be written, as a picture: decoded from its packets when its own picture is
    /// not kept. A frame that cannot be decoded is left out.
    pub fn pop(&mut self) -> Option<Ready> {
        loop {
            let decoded = self.decode_front_if_needed();
            let mut waiting = self.take_front()?;
            let image = match decoded {
                Ok(decoded) => waiting.image.take().or(decoded),
                Err(e) => {
                    warn!(error = %e, "cannot decode the frames kept as packets; they are left out of the clip");
                    self.close_decoder();
                    waiting.image.take()
                }
            };
            if self.frames.is_empty() {
                self.close_decoder_caught_up();
            }
            let to_write = self.will_write(&waiting);
            let ready = match image {
                Some(image) if to_write => Some(Ready {
                    at: waiting.at,
                    boxes: std::mem::take(&mut waiting.boxes),
                    image,
                }),
                None if to_write => {
                    debug!(pts = ?waiting.at.pts, "a frame kept as packets could not be decoded; left out");
                    None
                }
                _ => None,
            };
            self.remember_written(waiting);
            if ready.is_some() {
                return ready;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames to be written.
    pub fn len(&self) -> usize {
        self.frames.iter().filter(|f| self.will_write(f)).count()
    }

    /// Memory the frames hold.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The timestamp of the first frame to be written.
    pub fn first(&self) -> Option<Timestamp> {
        self.frames
            .iter()
            .find(|f| self.will_write(f))
            .map(|f| f.at)
    }

    /// Keeps the frames at most `pre_roll` older than `now` (from the keyframe before them, whose
    /// packets they need) and within `max_bytes`, dropping the oldest first. True when `max_bytes` cut
    /// frames `pre_roll` would keep.
    pub fn keep_pre_roll(&mut self, now: Duration, pre_roll: Duration, max_bytes: u64) -> bool {
        self.write_from = now.saturating_sub(pre_roll);
        if self.frames.front().is_some_and(|f| !self.can_start_at(f))
            && self
                .references
                .front()
                .is_some_and(|f| self.can_start_at(f))
        {
            // The frames after a clip need the packets of its last frames to be decoded.
            for mut reference in self.references.drain(..).rev() {
                reference.fed = false;
                self.bytes += reference.bytes();
                self.frames.push_front(reference);
            }
        }
        let recent = self
            .frames
            .iter()
            .position(|f| f.at.pts >= self.write_from)
            .unwrap_or(self.frames.len());
        let start = self
            .frames
            .iter()
            .take(recent + 1)
            .rposition(|f| self.can_start_at(f))
            .unwrap_or(recent);
        for _ in 0..start {
            self.drop_front();
        }
        let mut cut = false;
        while self.bytes > max_bytes && !self.frames.is_empty() {
            cut |= self
                .frames
                .front()
                .is_some_and(|f| f.at.pts >= self.write_from);
            self.drop_front();
            // Without their keyframe the frames up to the next one cannot be decoded either.
            while self.frames.front().is_some_and(|f| !self.can_start_at(f)) {
                self.drop_front();
            }
        }
        cut
    }

    pub fn clear(&mut self) {
        self.frames.clear();
        self.references.clear();
        self.bytes = 0;
        self.packets_seen = false;
        self.close_decoder();
    }

    /// True once after the clip caught up with the camera and the decoder was closed.
    pub fn take_caught_up(&mut self) -> bool {
        std::mem::take(&mut self.caught_up)
    }

    /// Whether writing can start at `frame`: its packets start with a keyframe, or (in a stream without
    /// packets) it keeps its picture.
    fn can_start_at(&self, frame: &Waiting) -> bool {
        frame.encoded.starts_with_keyframe() || (!self.packets_seen && frame.image.is_some())
    }

    fn will_write(&self, frame: &Waiting) -> bool {
        !frame.written && frame.at.pts >= self.write_from
    }

    fn take_front(&mut self) -> Option<Waiting> {
        let waiting = self.frames.pop_front()?;
        self.bytes = self.bytes.saturating_sub(waiting.bytes());
        Some(waiting)
    }

    /// Drops the oldest frame; the written frames before it are no use to the next pre-roll then.
    fn drop_front(&mut self) {
        self.take_front();
        self.references.clear();
    }

    /// Keeps a written frame's packets while the next pre-roll may need them.
    fn remember_written(&mut self, mut waiting: Waiting) {
        if waiting.encoded.is_empty() {
            return;
        }
        if waiting.encoded.starts_with_keyframe() || self.references.len() >= MAX_REMEMBERED {
            self.references.clear();
        }
        waiting.image = None;
        waiting.written = true;
        self.references.push_back(waiting);
    }

    /// Starts decoding at the front frame; false (the frame is to be left out) when it is not a
    /// keyframe or the decoder cannot start.
    fn start_decoder(&mut self) -> bool {
        if !self.frames.front().is_some_and(|f| self.can_start_at(f)) {
            return false;
        }
        let caps = self
            .frames
            .front()
            .and_then(|front| front.encoded.packets.first()?.caps_owned());
        let opened = caps
            .ok_or_else(|| "a packet without caps".to_string())
            .and_then(|caps| Decoder::open(&caps, DECODER_THREADS).map_err(|e| e.to_string()));
        match opened {
            Ok(decoder) => {
                self.decoder = Some(decoder);
                self.decoding_since = Some((Instant::now(), 0));
                true
            }
            Err(e) => {
                warn!(error = %e, "cannot start a decoder for the frames kept as packets");
                false
            }
        }
    }

    /// The front frame's picture from the decoder when the frame kept only its packets (starting the
    /// decoder there if none runs); `None` when it keeps its own picture or cannot be decoded.
    fn decode_front_if_needed(&mut self) -> Result<Option<I420Image>, String> {
        let Some(front) = self.frames.front() else {
            return Ok(None);
        };
        if front.image.is_some() {
            // Frames after it may still need its packets as their reference.
            self.feed(0)?;
            Ok(None)
        } else if self.decoder.is_none() && !self.start_decoder() {
            Ok(None)
        } else {
            self.decode_front()
        }
    }

    /// Closes the decoder once nothing waits: the frames to come bring their own pictures.
    fn close_decoder_caught_up(&mut self) {
        if self.decoder.is_none() {
            return;
        }
        if let Some((since, pictures)) = self.decoding_since {
            debug!(
                pictures,
                ms = since.elapsed().as_millis() as u64,
                "frames kept as packets written; caught up with the camera"
            );
        }
        self.close_decoder();
        self.caught_up = true;
    }

    fn close_decoder(&mut self) {
        self.decoder = None;
        self.decoded.clear();
        self.drained = false;
        self.decoding_since = None;
        for frame in &mut self.frames {
            frame.fed = false;
        }
    }

    /// Gives the decoder the packets of frame `index` if it has not had them; false when there is no
    /// such frame.
    fn feed(&mut self, index: usize) -> Result<bool, String> {
        let (Some(decoder), Some(frame), false) = (
            self.decoder.as_mut(),
            self.frames.get_mut(index),
            self.drained,
        ) else {
            return Ok(false);
        };
        if !frame.fed {
            for packet in &frame.encoded.packets {
                decoder.send(packet).map_err(|e| e.to_string())?;
            }
            frame.fed = true;
        }
        Ok(true)
    }

    /// The front frame's picture from the decoder; `None` when the decoder skipped it.
    fn decode_front(&mut self) -> Result<Option<I420Image>, String> {
        for index in 0..=FEED_AHEAD {
            self.feed(index)?;
        }
        let wanted = self.frames.front().and_then(|f| f.encoded.pts);
        loop {
            let picture = match self.decoded.pop_front() {
                Some(picture) => Some(picture),
                None if self.drained => return Ok(None),
                None => self.decoder.as_mut().ok_or("no decoder")?.next_picture(),
            };
            match picture {
                Some((Some(pts), _)) if wanted.is_some_and(|wanted| pts < wanted) => {
                    // The picture of a frame the camera dropped: not in the backlog.
                }
                Some((Some(pts), image)) if wanted.is_some_and(|wanted| pts > wanted) => {
                    self.decoded.push_front((Some(pts), image));
                    return Ok(None);
                }
                Some((_, image)) => {
                    if let Some((_, pictures)) = self.decoding_since.as_mut() {
                        *pictures += 1;
                    }
                    return Ok(Some(image));
                }
                None => {
                    let fed = self.frames.iter().take_while(|f| f.fed).count();
                    if fed == self.frames.len() {
                        // Every packet is in: what is missing, the decoder holds back.
                        self.drain()?;
                    } else if fed <= MAX_FEED_AHEAD {
                        self.feed(fed)?;
                    } else {
                        return Err(format!("no picture from {fed} frames' packets"));
                    }
                }
            }
        }
    }

    /// The decoder has every packet there is and still holds pictures back (a stream with B-frames
    /// reorders them): end its stream so that it gives them all.
    fn drain(&mut self) -> Result<(), String> {
        let decoder = self.decoder.as_mut().ok_or("no decoder")?;
        decoder.send_end().map_err(|e| e.to_string())?;
        self.decoded
            .extend(std::iter::from_fn(|| decoder.next_picture()));
        self.drained = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i420::I420Image;
    use crate::stream::{Frame, Timestamp};
    use opencv::core::Size;
    use std::time::SystemTime;

    fn verdict(ms: u64) -> Verdict {
        Verdict {
            frame: Frame {
                image: I420Image::filled(Size::new(10, 10), [16, 128, 128]).unwrap(),
                seq: ms,
                at: Timestamp {
                    pts: Duration::from_millis(ms),
                    wall: SystemTime::UNIX_EPOCH,
                },
                encoded: Default::default(),
            },
            boxes: Vec::new(),
            warming_up: false,
            sustained: false,
        }
    }

    #[test]
    fn the_pre_roll_keeps_the_last_seconds_within_its_memory() {
        let mut backlog = Backlog::default();
        for ms in (0..=5000).step_by(500) {
            backlog.push(verdict(ms));
            backlog.keep_pre_roll(Duration::from_millis(ms), Duration::from_secs(2), u64::MAX);
        }
        assert_eq!(backlog.len(), 5, "3000..=5000 ms");
        assert_eq!(backlog.first().unwrap().pts, Duration::from_millis(3000));
        assert_eq!(backlog.bytes(), 5 * 150, "10x10 I420 frames");
        backlog.keep_pre_roll(Duration::from_millis(5000), Duration::from_secs(2), 350);
        assert_eq!(backlog.len(), 2, "cut to the memory bound");
        backlog.keep_pre_roll(Duration::from_millis(5000), Duration::ZERO, u64::MAX);
        assert_eq!(backlog.len(), 1, "no pre-roll keeps only the current frame");
    }
}
