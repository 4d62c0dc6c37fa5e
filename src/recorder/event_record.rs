//! What a clip shows, gathered while it is written: the boxes over time for the event record, and the
//! frame with the most motion for the snapshot. Both go up beside the clip.

use std::time::{Duration, SystemTime};

use opencv::core::Rect;
use opencv::prelude::*;
use serde::Serialize;

use crate::i420::I420Image;

/// JPEG quality of the snapshot: small enough for a phone preview, sharp enough to tell who it is.
const SNAPSHOT_JPEG_QUALITY: u8 = 85;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("converting the frame: {0}")]
    OpenCv(#[from] opencv::Error),
    #[error("encoding the JPEG: {0}")]
    Jpeg(#[from] jpeg_encoder::EncodingError),
    #[error("a frame of {0}x{1} is too large for a JPEG")]
    TooLarge(i32, i32),
}

/// The event record, as uploaded (`<stem>.json` beside `<stem>.mp4`).
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub camera: String,
    pub clip: String,
    pub snapshot: Option<String>,
    /// UTC, RFC 3339 with milliseconds: the clip's first frame (pre-roll included), the first frame with
    /// motion, and the end of the last frame.
    pub start: String,
    pub motion_start: String,
    pub end: String,
    pub seconds: f64,
    pub pre_roll_seconds: f64,
    pub frames: u64,
    pub fps: f64,
    pub width: i32,
    pub height: i32,
    /// Seconds from the clip's start of the snapshot's frame.
    pub snapshot_at: Option<f64>,
    /// Every frame with boxes: seconds from the clip's start, boxes as `[x, y, width, height]` in pixels.
    pub motion: Vec<MotionSample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MotionSample {
    pub t: f64,
    pub boxes: Vec<[i32; 4]>,
}

/// Collects the event of one clip as its frames are written.
pub struct EventTracker {
    first: Option<(Duration, SystemTime)>,
    motion_start: Option<(Duration, SystemTime)>,
    samples: Vec<MotionSample>,
    best: Option<BestFrame>,
}

struct BestFrame {
    area: i64,
    at: Duration,
    image: I420Image,
}

impl EventTracker {
    /// `motion_start` is the frame that started the clip (after the pre-roll).
    pub fn new(motion_start: (Duration, SystemTime)) -> Self {
        Self {
            first: None,
            motion_start: Some(motion_start),
            samples: Vec::new(),
            best: None,
        }
    }

    /// Notes a frame about to be written (boxes already drawn on `image`). A copy of it is kept when it
    /// is the best snapshot so far (the frames themselves go on to the encoder).
    pub fn on_frame(
        &mut self,
        pts: Duration,
        wall: SystemTime,
        boxes: &[Rect],
        image: &I420Image,
    ) -> opencv::Result<()> {
        let (first_pts, _) = *self.first.get_or_insert((pts, wall));
        if boxes.is_empty() {
            return Ok(());
        }
        let t = pts.saturating_sub(first_pts);
        self.samples.push(MotionSample {
            t: millis(t),
            boxes: boxes
                .iter()
                .map(|b| [b.x, b.y, b.width, b.height])
                .collect(),
        });
        let area: i64 = boxes
            .iter()
            .map(|b| i64::from(b.width) * i64::from(b.height))
            .sum();
        if self.best.as_ref().is_some_and(|best| best.area >= area) {
            return Ok(());
        }
        self.best = Some(BestFrame {
            area,
            at: t,
            image: image.try_clone()?,
        });
        Ok(())
    }

    /// The snapshot as JPEG, if any frame had motion (encoded with the `jpeg-encoder` crate: OpenCV's
    /// imgcodecs would pull GDAL and dozens more libraries into the service).
    pub fn snapshot_jpeg(&self) -> Result<Option<Vec<u8>>, SnapshotError> {
        let Some(best) = &self.best else {
            return Ok(None);
        };
        let size = best.image.size();
        let (Ok(width), Ok(height)) = (u16::try_from(size.width), u16::try_from(size.height))
        else {
            return Err(SnapshotError::TooLarge(size.width, size.height));
        };
        let bgr = best.image.to_bgr()?;
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, SNAPSHOT_JPEG_QUALITY).encode(
            bgr.data_bytes()?,
            width,
            height,
            jpeg_encoder::ColorType::Bgr,
        )?;
        Ok(Some(jpeg))
    }

    /// The record, once the clip is closed.
    pub fn record(&self, clip: ClipSummary, snapshot: Option<String>) -> EventRecord {
        let (first_pts, first_wall) = self.first.unwrap_or((clip.last_pts, clip.last_wall));
        let (motion_pts, motion_wall) = self.motion_start.unwrap_or((first_pts, first_wall));
        let end = clip.last_wall + clip.frame_interval;
        let seconds = clip.last_pts.saturating_sub(first_pts) + clip.frame_interval;
        EventRecord {
            camera: clip.camera,
            clip: clip.blob_name,
            snapshot_at: snapshot
                .as_ref()
                .and(self.best.as_ref())
                .map(|b| millis(b.at)),
            snapshot,
            start: rfc3339(first_wall),
            motion_start: rfc3339(motion_wall),
            end: rfc3339(end),
            seconds: millis(seconds),
            pre_roll_seconds: millis(motion_pts.saturating_sub(first_pts)),
            frames: clip.frames,
            fps: clip.fps,
            width: clip.width,
            height: clip.height,
            motion: self.samples.clone(),
        }
    }
}

/// What the recorder knows of a closed clip, for its record.
pub struct ClipSummary {
    pub camera: String,
    pub blob_name: String,
    pub last_pts: Duration,
    pub last_wall: SystemTime,
    pub frame_interval: Duration,
    pub frames: u64,
    pub fps: f64,
    pub width: i32,
    pub height: i32,
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

fn rfc3339(at: SystemTime) -> String {
    let utc = time::OffsetDateTime::from(at);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    utc.format(format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i420::Colorimetry;
    use opencv::core::{Size, Vector};
    use opencv::imgcodecs;

    fn image(value: f64) -> I420Image {
        I420Image::filled(
            Size::new(160, 90),
            Colorimetry::default().yuv_of([value as u8; 3]),
        )
        .unwrap()
    }

    #[test]
    fn the_record_holds_the_timeline_and_the_snapshot_is_the_frame_with_most_motion() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |ms: u64| (Duration::from_millis(ms), base + Duration::from_millis(ms));
        let mut tracker = EventTracker::new(at(3000));
        for (ms, boxes, value) in [
            (0, vec![], 10.0),
            (3000, vec![Rect::new(0, 0, 10, 10)], 20.0),
            (
                3500,
                vec![Rect::new(0, 0, 40, 40), Rect::new(50, 50, 5, 5)],
                30.0,
            ),
            (4000, vec![Rect::new(0, 0, 20, 20)], 40.0),
        ] {
            let (pts, wall) = at(ms);
            tracker.on_frame(pts, wall, &boxes, &image(value)).unwrap();
        }
        let jpeg = tracker.snapshot_jpeg().unwrap().expect("a snapshot");
        let decoded =
            imgcodecs::imdecode(&Vector::from_slice(&jpeg), imgcodecs::IMREAD_COLOR).unwrap();
        let pixel = decoded.at_2d::<opencv::core::Vec3b>(45, 80).unwrap().0[0];
        assert!((28..=32).contains(&pixel), "the 3.5 s frame: {pixel}");
        let (last_pts, last_wall) = at(4000);
        let record = tracker.record(
            ClipSummary {
                camera: "gate".into(),
                blob_name: "gate/d/x.mp4".into(),
                last_pts,
                last_wall,
                frame_interval: Duration::from_millis(500),
                frames: 4,
                fps: 2.0,
                width: 160,
                height: 90,
            },
            Some("gate/d/x.jpg".into()),
        );
        assert_eq!(record.start, "2027-01-15T08:00:00.000Z");
        assert_eq!(record.motion_start, "2027-01-15T08:00:03.000Z");
        assert_eq!(record.end, "2027-01-15T08:00:04.500Z");
        assert_eq!((record.seconds, record.pre_roll_seconds), (4.5, 3.0));
        assert_eq!(record.snapshot_at, Some(3.5));
        assert_eq!(record.motion.len(), 3);
        assert_eq!(record.motion[1].boxes, [[0, 0, 40, 40], [50, 50, 5, 5]]);
    }
}
