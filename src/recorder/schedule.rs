//! When a clip starts and ends: a pure state machine over frame timestamps, so it is tested without a
//! camera, a writer or a clock. The pre-roll is not its business: the recorder puts the frames it kept
//! in front of the clip the schedule opens.

use std::time::Duration;

use crate::config::ClipPolicy;

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

/// Decides clip boundaries under a [`ClipPolicy`]:
/// - `Fixed`: motion starts a clip of `duration`; frames are written while their timestamp is within
///   `duration` of the first one. Motion after that starts the next clip at once.
/// - `FollowMotion`: motion starts a clip that goes on while frames are within `post_roll` of the last
///   motion; a clip that reaches `max_clip` is closed and the next one starts with the same frame.
#[derive(Debug, Clone)]
pub struct ClipSchedule {
    policy: ClipPolicy,
    open_since: Option<Duration>,
    last_motion: Duration,
}

impl ClipSchedule {
    pub fn new(policy: ClipPolicy) -> Self {
        Self {
            policy,
            open_since: None,
            last_motion: Duration::ZERO,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_since.is_some()
    }

    /// Decides for a frame at `pts` (monotonic) that does or does not show motion.
    pub fn on_frame(&mut self, pts: Duration, motion: bool) -> FrameAction {
        let mut action = FrameAction::default();
        if motion {
            self.last_motion = pts;
        }
        if let Some(since) = self.open_since {
            let open_for = pts.saturating_sub(since);
            match self.policy {
                ClipPolicy::Fixed { duration } if open_for < duration => {
                    action.write = true;
                    return action;
                }
                ClipPolicy::Fixed { .. } => {}
                ClipPolicy::FollowMotion {
                    post_roll,
                    max_clip,
                } => {
                    let still_active = motion || pts.saturating_sub(self.last_motion) < post_roll;
                    if still_active && open_for < max_clip {
                        action.write = true;
                        return action;
                    }
                    if still_active {
                        // At MAX_CLIP: the next clip takes over with this very frame.
                        self.open_since = Some(pts);
                        return FrameAction {
                            finish: true,
                            start: true,
                            write: true,
                        };
                    }
                }
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

    fn fixed(duration: Duration) -> ClipPolicy {
        ClipPolicy::Fixed { duration }
    }

    fn follow(post_roll_secs: u64, max_clip_secs: u64) -> ClipPolicy {
        ClipPolicy::FollowMotion {
            post_roll: Duration::from_secs(post_roll_secs),
            max_clip: Duration::from_secs(max_clip_secs),
        }
    }

    /// Runs frames `0..n` with motion where `motion(i)`, and returns the clips as (first, last) frame.
    fn clips(n: u64, policy: ClipPolicy, motion: impl Fn(u64) -> bool) -> Vec<(u64, u64)> {
        let mut schedule = ClipSchedule::new(policy);
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
        assert!(clips(300, fixed(Duration::from_secs(4)), |_| false).is_empty());
        assert!(clips(300, follow(2, 10), |_| false).is_empty());
    }

    #[test]
    fn a_clip_lasts_the_duration_from_the_first_motion_even_when_motion_stops() {
        let clips = clips(300, fixed(Duration::from_secs(4)), |i| i == 30);
        assert_eq!(clips, [(30, 89)], "60 frames at 15 fps");
    }

    #[test]
    fn continuing_motion_starts_the_next_clip_without_a_gap() {
        let clips = clips(150, fixed(Duration::from_secs(4)), |i| i >= 15);
        assert_eq!(clips, [(15, 74), (75, 134), (135, 149)]);
    }

    #[test]
    fn a_motion_clip_ends_post_roll_after_the_last_motion() {
        // Motion in frames 30..=59 (2 s), then still: the clip keeps the 2 s (29 frames) after frame 59.
        let clips = clips(300, follow(2, 60), |i| (30..60).contains(&i));
        assert_eq!(clips, [(30, 88)]);
    }

    #[test]
    fn short_pauses_within_the_post_roll_keep_one_clip_longer_ones_split_it() {
        // Motion 0..15, pause 1 s, motion 30..45, pause 3 s, motion 90..100; post-roll 2 s.
        let motion = |i: u64| i < 15 || (30..45).contains(&i) || (90..100).contains(&i);
        let clips = clips(200, follow(2, 60), motion);
        assert_eq!(clips, [(0, 73), (90, 128)]);
    }

    #[test]
    fn a_motion_clip_at_max_clip_hands_over_to_the_next_without_a_gap() {
        // Motion throughout, 4 s clips at most: 60-frame clips back to back.
        let clips = clips(150, follow(1, 4), |_| true);
        assert_eq!(clips, [(0, 59), (60, 119), (120, 149)]);
    }

    #[test]
    fn zero_post_roll_ends_the_clip_with_the_motion() {
        let clips = clips(100, follow(0, 60), |i| (10..20).contains(&i));
        assert_eq!(clips, [(10, 19)]);
    }

    #[test]
    fn a_stream_end_closes_the_clip_early() {
        let mut schedule = ClipSchedule::new(fixed(Duration::from_secs(30)));
        assert!(schedule.on_frame(at(0), true).start);
        assert!(schedule.on_end());
        assert!(!schedule.on_end());
        assert_eq!(schedule.on_frame(at(1), false), FrameAction::default());
    }
}
