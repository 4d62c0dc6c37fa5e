//! Frames the recorder holds but has not written: the pre-roll while no clip is open, and while a clip
//! is open the frames waiting for the encoder.
//!
//! When motion starts, the pre-roll becomes the head of the new clip. Encoding seconds of frames at once
//! would stall the recorder and make the camera drop the very frames that show the motion, so the
//! backlog is written one frame per incoming frame and caught up when the recorder is idle. Frames are
//! kept as decoded (no copy, no conversion), bounded by time and by bytes.

use std::collections::VecDeque;
use std::time::Duration;

use crate::stream::Verdict;

#[derive(Default)]
pub struct Backlog {
    frames: VecDeque<Verdict>,
    bytes: u64,
}

impl Backlog {
    pub fn push(&mut self, verdict: Verdict) {
        self.bytes += frame_bytes(&verdict);
        self.frames.push_back(verdict);
    }

    pub fn pop(&mut self) -> Option<Verdict> {
        let verdict = self.frames.pop_front()?;
        self.bytes = self.bytes.saturating_sub(frame_bytes(&verdict));
        Some(verdict)
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Memory the frames hold.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The oldest frame's timestamp.
    pub fn first(&self) -> Option<crate::stream::Timestamp> {
        self.frames.front().map(|v| v.frame.at)
    }

    /// Keeps only the frames at most `pre_roll` older than `now` and within `max_bytes`, dropping the
    /// oldest first.
    pub fn keep_pre_roll(&mut self, now: Duration, pre_roll: Duration, max_bytes: u64) {
        while let Some(front) = self.frames.front() {
            let too_old = front.frame.at.pts + pre_roll < now;
            if !too_old && self.bytes <= max_bytes {
                break;
            }
            self.pop();
        }
    }

    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }
}

/// Bytes of pixel data a frame holds.
pub fn frame_bytes(verdict: &Verdict) -> u64 {
    verdict.frame.image.byte_len() as u64
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
