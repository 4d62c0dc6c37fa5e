//! The motion stage: decides, frame by frame, where something moves.
//!
//! Receives `StreamEvent<Frame>`, emits `StreamEvent<Verdict>`. The detector is the original service's
//! algorithm (MOG2 background subtraction without shadows, erode and dilate twice, external contours, a
//! minimum area) run on a reduced grayscale copy of the frame; the boxes are mapped back to full resolution.
//! Each (re)connected stream gets a fresh background model, and its first frames only train it.
//! `MOTION_MASK` polygons are zeroed in the foreground before clean-up, so motion there never counts.
//! Motion counts (`Verdict::has_motion`) only once it was found on `MIN_MOTION_FRAMES` analysed frames in
//! a row, so one noisy frame never starts a clip; the boxes of every frame are passed on as found.

mod detector;
mod mask;
#[cfg(test)]
mod synthetic;

use crossbeam_channel::{Receiver, Sender};
use tracing::error;

pub use detector::MotionDetector;
pub use mask::MotionMask;

use crate::config::MotionSettings;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::stream::{Frame, StreamEvent, Verdict};

/// Turns camera events into verdicts; owns the detector of the current stream.
pub struct MotionStage {
    settings: MotionSettings,
    detector: Option<MotionDetector>,
    /// Analysed frames in a row with motion, up to the last one.
    moving_frames: u32,
}

impl MotionStage {
    pub fn new(settings: MotionSettings) -> Self {
        Self {
            settings,
            detector: None,
            moving_frames: 0,
        }
    }

    pub fn handle(&mut self, event: StreamEvent<Frame>) -> opencv::Result<StreamEvent<Verdict>> {
        Ok(match event {
            StreamEvent::Started(info) => {
                self.detector = Some(MotionDetector::new(&self.settings, info)?);
                self.moving_frames = 0;
                StreamEvent::Started(info)
            }
            StreamEvent::Item(frame) => {
                let (boxes, warming_up) = match self.detector.as_mut() {
                    Some(detector) => (detector.detect(&frame.image)?, detector.warming_up()),
                    None => (Vec::new(), true),
                };
                self.moving_frames = if warming_up || boxes.is_empty() {
                    0
                } else {
                    self.moving_frames.saturating_add(1)
                };
                StreamEvent::Item(Verdict {
                    frame,
                    boxes,
                    warming_up,
                    sustained: self.moving_frames >= self.settings.min_frames,
                })
            }
            StreamEvent::Ended { reason } => {
                self.detector = None;
                self.moving_frames = 0;
                StreamEvent::Ended { reason }
            }
        })
    }
}

/// Runs the stage on its own thread until the input closes or shutdown.
pub fn run(
    settings: MotionSettings,
    input: &Receiver<StreamEvent<Frame>>,
    output: &Sender<StreamEvent<Verdict>>,
    shutdown: &Shutdown,
    metrics: &Metrics,
) {
    let mut stage = MotionStage::new(settings);
    loop {
        let event = crossbeam_channel::select! {
            recv(input) -> event => match event { Ok(event) => event, Err(_) => return },
            recv(shutdown.closed()) -> _ => return,
        };
        let (is_frame, started) = (
            matches!(event, StreamEvent::Item(_)),
            std::time::Instant::now(),
        );
        let verdict = stage.handle(event);
        if is_frame {
            metrics.detection_took(started.elapsed());
        }
        match verdict {
            Ok(verdict) => {
                if output.send(verdict).is_err() {
                    return;
                }
            }
            Err(e) => error!(error = %e, "motion detection failed on a frame; frame skipped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{StreamInfo, Timestamp};
    use opencv::core::Size;
    use std::time::{Duration, SystemTime};
    use synthetic::scene;

    fn stage(min_frames: u32) -> MotionStage {
        let mut stage = MotionStage::new(MotionSettings {
            min_area: 5000.0,
            mask: MotionMask::default(),
            min_frames,
        });
        let info = StreamInfo {
            size: Size::new(1280, 720),
            fps: 15.0,
        };
        assert!(matches!(
            stage.handle(StreamEvent::Started(info)).unwrap(),
            StreamEvent::Started(_)
        ));
        stage
    }

    /// Feeds a frame (with the box at `box_x`, if any); returns (boxes found, has_motion, warming_up).
    fn feed(stage: &mut MotionStage, box_x: Option<i32>) -> (usize, bool, bool) {
        let frame = Frame {
            image: scene(box_x),
            seq: 0,
            at: Timestamp {
                pts: Duration::ZERO,
                wall: SystemTime::UNIX_EPOCH,
            },
        };
        match stage.handle(StreamEvent::Item(frame)).unwrap() {
            StreamEvent::Item(verdict) => (
                verdict.boxes.len(),
                verdict.has_motion(),
                verdict.warming_up,
            ),
            _ => panic!("a frame must give a verdict"),
        }
    }

    fn warm_up(stage: &mut MotionStage) {
        while feed(stage, None).2 {}
        for _ in 0..5 {
            assert_eq!(feed(stage, None), (0, false, false));
        }
    }

    #[test]
    fn a_one_frame_blip_shows_its_boxes_but_is_not_motion() {
        let mut stage = stage(3);
        warm_up(&mut stage);
        assert_eq!(feed(&mut stage, Some(600)), (1, false, false));
        for _ in 0..5 {
            assert_eq!(feed(&mut stage, None), (0, false, false));
        }
        // Two frames in a row are not enough either, and the count starts again after a quiet frame.
        assert_eq!(feed(&mut stage, Some(100)), (1, false, false));
        assert_eq!(feed(&mut stage, Some(130)), (1, false, false));
        assert!(!feed(&mut stage, None).1);
    }

    #[test]
    fn motion_on_min_motion_frames_frames_in_a_row_is_motion() {
        let mut stage = stage(3);
        warm_up(&mut stage);
        let verdicts: Vec<bool> = (0..5)
            .map(|i| feed(&mut stage, Some(100 + 30 * i)).1)
            .collect();
        assert_eq!(verdicts, [false, false, true, true, true]);
        assert!(!feed(&mut stage, None).1);
    }

    #[test]
    fn one_frame_is_the_original_behaviour() {
        let mut stage = stage(1);
        warm_up(&mut stage);
        assert_eq!(feed(&mut stage, Some(600)), (1, true, false));
    }
}
