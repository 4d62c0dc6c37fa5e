//! When a clip starts and ends: a pure state machine over frame timestamps, so it is tested without a
//! camera, a writer or a clock.

use std::time::Duration;

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameAction {
    /// Close the open clip before this frame.
    pub finish: bool,
    /// Open a new clip with this frame.
    pub start: bool,
    /// Write this frame into the (possibly new) clip.
    pub write: bool,
}

/// Fixed-length clips: motion starts a clip of `duration`; frames are written while their timestamp is
/// within `duration` of the first one. Motion after that starts the next clip at once.
#[derive(Debug, Clone)]
pub struct ClipSchedule {
    duration: Duration,
    open_since: Option<Duration>,
}

impl ClipSchedule {
    pub fn new(duration: Duration) -> Self {
        Self {
            duration,
            open_since: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_since.is_some()
    }

    /// Decides for a frame at `pts` (monotonic) that does or does not show motion.
    pub fn on_frame(&mut self, pts: Duration, motion: bool) -> FrameAction {
        let mut action = FrameAction::default();
        if let Some(since) = self.open_since {
            if pts.saturating_sub(since) < self.duration {
                action.write = true;
                return action;
            }
            action.finish = true;
            self.open_since = None;
        }
        if motion {
            action.start = true;
            action.write = true;
            self.open_since = Some(pts);
        }
        action
    }

    /// The stream ended or the service stops: close the open clip, if any. Returns whether one was open.
    pub fn on_end(&mut self) -> bool {
        self.open_since.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS: u64 = 15;

    fn at(frame: u64) -> Duration {
        Duration::from_millis(frame * 1000 / FPS)
    }

    /// Runs frames `0..n` with motion where `motion(i)`, and returns the clips as (first, last) frame.
    fn clips(n: u64, duration: Duration, motion: impl Fn(u64) -> bool) -> Vec<(u64, u64)> {
        let mut schedule = ClipSchedule::new(duration);
        let mut clips = Vec::new();
        let mut open: Option<(u64, u64)> = None;
        for i in 0..n {
            let action = schedule.on_frame(at(i), motion(i));
            if action.finish {
                clips.extend(open.take());
            }
            if action.start {
                open = Some((i, i));
            }
            if action.write {
                open.as_mut().expect("write without an open clip").1 = i;
            }
        }
        if schedule.on_end() {
            clips.extend(open.take());
        }
        clips
    }

    #[test]
    fn no_motion_no_clip() {
        assert!(clips(300, Duration::from_secs(4), |_| false).is_empty());
    }

    #[test]
    fn a_clip_lasts_the_duration_from_the_first_motion_even_when_motion_stops() {
        let clips = clips(300, Duration::from_secs(4), |i| i == 30);
        assert_eq!(clips, [(30, 89)], "60 frames at 15 fps");
    }

    #[test]
    fn continuing_motion_starts_the_next_clip_without_a_gap() {
        let clips = clips(150, Duration::from_secs(4), |i| i >= 15);
        assert_eq!(clips, [(15, 74), (75, 134), (135, 149)]);
    }

    #[test]
    fn a_stream_end_closes_the_clip_early() {
        let mut schedule = ClipSchedule::new(Duration::from_secs(30));
        assert!(schedule.on_frame(at(0), true).start);
        assert!(schedule.on_end());
        assert!(!schedule.on_end());
        assert_eq!(schedule.on_frame(at(1), false), FrameAction::default());
    }
}
