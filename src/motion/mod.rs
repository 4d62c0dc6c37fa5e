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
use crate::stream::{Frame, StreamEvent, StreamInfo, Verdict};

/// Frames per second the detector analyses (Frigate's default detection rate). A faster stream has every
/// Nth frame analysed, N = fps / 5 rounded (3 at 15 fps, 6 at 30); the frames in between carry the last
/// analysed frame's boxes and verdict, so every frame is still recorded with boxes.
pub const DETECTION_FPS: f64 = 5.0;

/// Turns camera events into verdicts; owns the detector of the current stream.
pub struct MotionStage {
    settings: MotionSettings,
    detector: Option<MotionDetector>,
    /// Every `stride`th frame of the stream is analysed.
    stride: u64,
    /// Frames of the current stream so far.
    frames: u64,
    /// Analysed frames in a row with motion, up to the last one.
    moving_frames: u32,
    /// What the last analysed frame showed: boxes, warming up, sustained.
    last: (Vec<opencv::core::Rect>, bool, bool),
}

impl MotionStage {
    pub fn new(settings: MotionSettings) -> Self {
        Self {
            settings,
            detector: None,
            stride: 1,
            frames: 0,
            moving_frames: 0,
            last: (Vec::new(), true, false),
        }
    }

    pub fn handle(&mut self, event: StreamEvent<Frame>) -> opencv::Result<StreamEvent<Verdict>> {
        Ok(match event {
            StreamEvent::Started(info) => {
                self.stride = detection_stride(info.fps);
                // The detector sees only the analysed frames: its rate is theirs.
                let analysed = StreamInfo::new(info.size, info.fps / self.stride as f64);
                self.detector = Some(MotionDetector::new(&self.settings, analysed)?);
                self.frames = 0;
                self.moving_frames = 0;
                self.last = (Vec::new(), true, false);
                StreamEvent::Started(info)
            }
            StreamEvent::Item(frame) => {
                if let Some(detector) = self.detector.as_mut() {
                    if self.frames.is_multiple_of(self.stride) {
                        let boxes = detector.detect(&frame.image.luma()?)?;
                        let warming_up = detector.warming_up();
                        self.moving_frames = if warming_up || boxes.is_empty() {
                            0
                        } else {
                            self.moving_frames.saturating_add(1)
                        };
                        let sustained = self.moving_frames >= self.settings.min_frames;
                        self.last = (boxes, warming_up, sustained);
                    }
                    self.frames += 1;
                }
                let (boxes, warming_up, sustained) = &self.last;
                StreamEvent::Item(Verdict {
                    frame,
                    boxes: boxes.clone(),
                    warming_up: *warming_up,
                    sustained: *sustained,
                })
            }
            StreamEvent::Ended { reason } => {
                self.detector = None;
                self.moving_frames = 0;
                self.last = (Vec::new(), true, false);
                StreamEvent::Ended { reason }
            }
        })
    }
}

/// Analyse every Nth frame so that about `DETECTION_FPS` frames a second are analysed.
fn detection_stride(fps: f64) -> u64 {
    (fps / DETECTION_FPS).round().max(1.0) as u64
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
    use crate::stream::Timestamp;
    use opencv::core::Size;
    use std::time::{Duration, SystemTime};
    use synthetic::scene;

    /// A stage on a 5 fps stream, so every frame is analysed.
    fn stage(min_frames: u32) -> MotionStage {
        stage_at(min_frames, DETECTION_FPS)
    }

    fn stage_at(min_frames: u32, fps: f64) -> MotionStage {
        let mut stage = MotionStage::new(MotionSettings {
            min_area: 5000.0,
            mask: MotionMask::default(),
            min_frames,
        });
        let info = StreamInfo::new(Size::new(1280, 720), fps);
        assert!(matches!(
            stage.handle(StreamEvent::Started(info)).unwrap(),
            StreamEvent::Started(_)
        ));
        stage
    }

    /// Feeds a frame (with the box at `box_x`, if any); returns (boxes found, has_motion, warming_up).
    fn feed(stage: &mut MotionStage, box_x: Option<i32>) -> (usize, bool, bool) {
        let frame = Frame {
            image: crate::i420::I420Image::from_bgr(&scene(box_x)).unwrap(),
            seq: 0,
            at: Timestamp {
                pts: Duration::ZERO,
                wall: SystemTime::UNIX_EPOCH,
            },
            encoded: Default::default(),
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

    #[test]
    fn at_15_fps_every_third_frame_is_analysed_and_the_others_carry_its_boxes() {
        let mut stage = stage_at(1, 15.0);
        assert_eq!(stage.stride, 3);
        warm_up(&mut stage);
        // Re-align to an analysed frame: warm-up ended on one, then 5 quiet frames were fed.
        while !stage.frames.is_multiple_of(stage.stride) {
            feed(&mut stage, None);
        }
        // Analysed frame with the box, then two carried frames without it: all three show the box.
        assert_eq!(feed(&mut stage, Some(600)), (1, true, false));
        assert_eq!(feed(&mut stage, None), (1, true, false));
        assert_eq!(feed(&mut stage, None), (1, true, false));
        // A box only on frames in between is never analysed.
        assert_eq!(feed(&mut stage, None), (0, false, false));
        assert_eq!(feed(&mut stage, Some(100)), (0, false, false));
        assert_eq!(feed(&mut stage, Some(100)), (0, false, false));
        assert_eq!(feed(&mut stage, None), (0, false, false));
    }

    #[test]
    fn the_stride_gives_about_five_analysed_frames_a_second() {
        assert_eq!(detection_stride(15.0), 3);
        assert_eq!(detection_stride(30.0), 6);
        assert_eq!(detection_stride(25.0), 5);
        assert_eq!(detection_stride(10.0), 2);
        assert_eq!(detection_stride(5.0), 1);
        assert_eq!(detection_stride(1.0), 1);
    }
}
