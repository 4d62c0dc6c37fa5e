//! The motion stage: decides, frame by frame, where something moves.
//!
//! Receives `StreamEvent<Frame>`, emits `StreamEvent<Verdict>`. The detector is the original service's
//! algorithm (MOG2 background subtraction without shadows, erode and dilate twice, external contours, a
//! minimum area) run on a reduced grayscale copy of the frame; the boxes are mapped back to full resolution.
//! Each (re)connected stream gets a fresh background model, and its first frames only train it.

mod detector;

use crossbeam_channel::{Receiver, Sender};
use tracing::error;

pub use detector::MotionDetector;

use crate::config::MotionSettings;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::stream::{Frame, StreamEvent, Verdict};

/// Turns camera events into verdicts; owns the detector of the current stream.
pub struct MotionStage {
    settings: MotionSettings,
    detector: Option<MotionDetector>,
}

impl MotionStage {
    pub fn new(settings: MotionSettings) -> Self {
        Self {
            settings,
            detector: None,
        }
    }

    pub fn handle(&mut self, event: StreamEvent<Frame>) -> opencv::Result<StreamEvent<Verdict>> {
        Ok(match event {
            StreamEvent::Started(info) => {
                self.detector = Some(MotionDetector::new(&self.settings, info)?);
                StreamEvent::Started(info)
            }
            StreamEvent::Item(frame) => {
                let (boxes, warming_up) = match self.detector.as_mut() {
                    Some(detector) => (detector.detect(&frame.image)?, detector.warming_up()),
                    None => (Vec::new(), true),
                };
                StreamEvent::Item(Verdict {
                    frame,
                    boxes,
                    warming_up,
                })
            }
            StreamEvent::Ended { reason } => {
                self.detector = None;
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
