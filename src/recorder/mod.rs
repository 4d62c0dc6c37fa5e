//! The recorder stage: cuts clips out of the verdict stream and hands finished ones to the spool.
//!
//! Receives `StreamEvent<Verdict>`; emits `ClipReady` (the clip committed to the spool, which wakes the
//! uploader). Motion starts a clip of `RECORD_DURATION` at the stream's real frame rate; every frame written
//! carries the detector's boxes. A clip cut short by a camera drop, a resolution change or shutdown is
//! closed properly and kept.

mod annotate;
mod events;
mod schedule;
mod writer;

use std::time::{Duration, SystemTime};

use crossbeam_channel::Receiver;
use tracing::{error, info, warn};

pub use annotate::{BOX_BGR, draw_boxes};
pub use events::{ClipEvent, ClipObserver};
pub use schedule::{ClipSchedule, FrameAction};
pub use writer::{ClipWriter, WriterError};

use crate::config::RecorderSettings;
use crate::shutdown::Shutdown;
use crate::spool::{ClipFacts, ClipName, Spool, SpooledClip, free_bytes};
use crate::stream::{StreamEvent, StreamInfo, Timestamp, Verdict};

/// A clip that was closed and committed to the spool.
#[derive(Debug, Clone)]
pub struct ClipReady {
    pub clip: SpooledClip,
    /// Stream time of the first and last frame.
    pub first_pts: Duration,
    pub last_pts: Duration,
    pub frames: u64,
    /// Boxes drawn over the whole clip.
    pub boxes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("writing clip {clip}: {source}")]
    Writer { clip: String, source: WriterError },
    #[error("committing clip {clip} to the spool: {source}")]
    Spool {
        clip: String,
        source: std::io::Error,
    },
    #[error("drawing boxes: {0}")]
    Annotate(#[from] opencv::Error),
}

struct OpenClip {
    name: ClipName,
    writer: ClipWriter,
    started: Timestamp,
    last_pts: Duration,
    frames: u64,
    boxes: u64,
}

/// Owns the open clip (if any) and the schedule that decides when clips start and end.
pub struct Recorder {
    settings: RecorderSettings,
    spool: Spool,
    schedule: ClipSchedule,
    stream: Option<StreamInfo>,
    open: Option<OpenClip>,
    last_stem_second: Option<(u64, u32)>,
    out_of_room: bool,
    last_room_check: Option<Duration>,
    observer: Option<ClipObserver>,
}

impl Recorder {
    pub fn new(settings: RecorderSettings, spool: Spool) -> Self {
        Self {
            schedule: ClipSchedule::new(settings.record_duration),
            settings,
            spool,
            stream: None,
            open: None,
            last_stem_second: None,
            out_of_room: false,
            last_room_check: None,
            observer: None,
        }
    }

    /// Handles one event; returns the clip it finished, if any.
    pub fn handle(
        &mut self,
        event: StreamEvent<Verdict>,
    ) -> Result<Option<ClipReady>, RecorderError> {
        match event {
            StreamEvent::Started(info) => {
                let finished = self.finish()?;
                self.stream = Some(info);
                Ok(finished)
            }
            StreamEvent::Item(verdict) => self.on_verdict(verdict),
            StreamEvent::Ended { .. } => {
                let finished = self.finish()?;
                self.stream = None;
                Ok(finished)
            }
        }
    }

    /// The stream ended or the service stops: closes and commits the open clip, if any.
    pub fn finish(&mut self) -> Result<Option<ClipReady>, RecorderError> {
        self.schedule.on_end();
        self.close_clip()
    }

    /// Closes and commits the open clip without touching the schedule (which may have opened the next).
    fn close_clip(&mut self) -> Result<Option<ClipReady>, RecorderError> {
        let Some(open) = self.open.take() else {
            return Ok(None);
        };
        let clip = open.name.blob_name();
        open.writer
            .finish()
            .map_err(|source| RecorderError::Writer {
                clip: clip.clone(),
                source,
            })?;
        let frame_seconds = self.stream.map(|s| 1.0 / s.fps).unwrap_or_default();
        let facts = ClipFacts {
            seconds: open.last_pts.saturating_sub(open.started.pts).as_secs_f64() + frame_seconds,
            frames: open.frames,
            boxes: open.boxes,
            salvaged: false,
        };
        let spooled = self
            .spool
            .commit(&open.name, &self.settings.camera_name, &facts)
            .map_err(|source| RecorderError::Spool { clip, source })?;
        Ok(Some(ClipReady {
            clip: spooled,
            first_pts: open.started.pts,
            last_pts: open.last_pts,
            frames: open.frames,
            boxes: open.boxes,
        }))
    }

    fn on_verdict(&mut self, mut verdict: Verdict) -> Result<Option<ClipReady>, RecorderError> {
        let Some(stream) = self.stream else {
            return Ok(None);
        };
        let image_size = opencv::core::MatTraitConst::size(&verdict.frame.image)?;
        let mut finished = None;
        if self
            .open
            .as_ref()
            .is_some_and(|open| open.writer.size() != image_size)
        {
            warn!(
                width = image_size.width,
                height = image_size.height,
                "frame size changed; closing the clip"
            );
            finished = self.finish()?;
        }
        let action = self
            .schedule
            .on_frame(verdict.frame.at.pts, verdict.has_motion());
        if action.finish {
            finished = self.close_clip()?;
        }
        let check_room = action.start
            || (action.write
                && self
                    .open
                    .as_ref()
                    .is_some_and(|o| o.frames % stream.fps.round().max(1.0) as u64 == 0));
        if check_room && !self.room_to_record(verdict.frame.at.pts) {
            // Close what we have cleanly rather than let the disk fill mid-write.
            return Ok(self.finish()?.or(finished));
        }
        if action.start {
            self.start(
                verdict.frame.at,
                StreamInfo {
                    size: image_size,
                    ..stream
                },
            )?;
        }
        if action.write {
            self.write(&mut verdict)?;
        }
        Ok(finished)
    }

    fn start(&mut self, at: Timestamp, stream: StreamInfo) -> Result<(), RecorderError> {
        let name = self.unique_name(at.wall);
        let path = self
            .spool
            .recording_path(&name)
            .map_err(|source| RecorderError::Spool {
                clip: name.blob_name(),
                source,
            })?;
        let writer = ClipWriter::create(&path, stream.size, stream.fps).map_err(|source| {
            RecorderError::Writer {
                clip: name.blob_name(),
                source,
            }
        });
        let writer = match writer {
            Ok(writer) => writer,
            Err(e) => {
                // Forget the schedule's clip too, so the next motion frame tries again.
                self.schedule.on_end();
                return Err(e);
            }
        };
        info!(clip = %name.blob_name(), fps = stream.fps, "motion: recording");
        self.notify(ClipEvent::Started {
            blob_name: &name.blob_name(),
            camera: &self.settings.camera_name,
            wall: at.wall,
        });
        self.open = Some(OpenClip {
            name,
            writer,
            started: at,
            last_pts: at.pts,
            frames: 0,
            boxes: 0,
        });
        Ok(())
    }

    fn write(&mut self, verdict: &mut Verdict) -> Result<(), RecorderError> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        draw_boxes(&mut verdict.frame.image, &verdict.boxes)?;
        open.writer
            .write(&verdict.frame.image)
            .map_err(|source| RecorderError::Writer {
                clip: open.name.blob_name(),
                source,
            })?;
        open.frames += 1;
        open.boxes += verdict.boxes.len() as u64;
        open.last_pts = verdict.frame.at.pts;
        Ok(())
    }

    /// Whether the spool's disk has room for recording, after deleting old clips if needed. Logs once
    /// when recording stops for lack of space and once when it can go on.
    fn room_to_record(&mut self, now: Duration) -> bool {
        // While out of room, look again once a second, not on every frame.
        let checked_recently = self
            .last_room_check
            .is_some_and(|last| now.saturating_sub(last) < Duration::from_secs(1));
        if self.out_of_room && checked_recently {
            return false;
        }
        self.last_room_check = Some(now);
        let room = self.spool.has_room() || {
            if let Err(e) = self.spool.enforce_limits() {
                error!(error = %e, "cannot apply the spool's size limits");
            }
            self.spool.has_room()
        };
        if room && self.out_of_room {
            info!("disk space is back: recording again");
        } else if !room && !self.out_of_room {
            error!(
                spool = %self.spool.root().display(),
                free_bytes = free_bytes(self.spool.root()).unwrap_or_default(),
                "disk full (under SPOOL_MIN_FREE): the clip is closed and nothing is recorded until space is free"
            );
        }
        self.out_of_room = !room;
        room
    }

    /// A name for a clip starting at `wall`, with a suffix if another clip started in the same second.
    fn unique_name(&mut self, wall: SystemTime) -> ClipName {
        let second = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut duplicate = match self.last_stem_second {
            Some((last, n)) if last == second => n + 1,
            _ => 0,
        };
        let mut name = ClipName::new(&self.settings.camera_name, wall, duplicate);
        while self.spool.contains(&name) {
            duplicate += 1;
            name = ClipName::new(&self.settings.camera_name, wall, duplicate);
        }
        self.last_stem_second = Some((second, duplicate));
        name
    }
}

/// Decodes a clip file to the end: how many frames it holds, and how long they last. For recordings a
/// crash left behind, to tell a salvageable file from a broken one.
pub fn inspect_clip(path: &std::path::Path) -> Result<ClipFacts, String> {
    use opencv::prelude::*;
    use opencv::videoio::{self, VideoCapture};
    let mut capture =
        VideoCapture::from_file(path, videoio::CAP_FFMPEG).map_err(|e| e.to_string())?;
    if !capture.is_opened().map_err(|e| e.to_string())? {
        return Err("not a readable video".into());
    }
    let fps = capture.get(videoio::CAP_PROP_FPS).unwrap_or_default();
    let mut frames = 0_u64;
    let mut image = opencv::core::Mat::default();
    while capture.read(&mut image).unwrap_or(false) && !image.empty() {
        frames += 1;
    }
    let seconds = if fps > 0.0 { frames as f64 / fps } else { 0.0 };
    Ok(ClipFacts {
        seconds,
        frames,
        boxes: 0,
        salvaged: true,
    })
}

/// Logs a finished clip.
pub fn log_clip(ready: &ClipReady) {
    info!(
        clip = %ready.clip.blob_name,
        frames = ready.frames,
        boxes = ready.boxes,
        seconds = format!("{:.1}", ready.last_pts.saturating_sub(ready.first_pts).as_secs_f64()),
        bytes = ready.clip.size,
        "clip recorded"
    );
}

/// Runs the stage on its own thread until the input closes or shutdown; the open clip is always closed.
pub fn run(mut recorder: Recorder, input: &Receiver<StreamEvent<Verdict>>, shutdown: &Shutdown) {
    loop {
        let event = crossbeam_channel::select! {
            recv(input) -> event => event.ok(),
            recv(shutdown.closed()) -> _ => None,
        };
        let last = event.is_none();
        let result = match event {
            Some(event) => recorder.handle(event),
            None => recorder.finish(),
        };
        match result {
            Ok(Some(ready)) => {
                log_clip(&ready);
                recorder.notify(ClipEvent::Recorded(&ready));
            }
            Ok(None) => {}
            Err(e) => error!(error = %e, "recording failed"),
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Frame;
    use opencv::core::{CV_8UC3, Mat, Rect, Scalar, Size};

    const FPS: f64 = 15.0;

    fn verdict(seq: u64, motion: bool) -> StreamEvent<Verdict> {
        let pts = Duration::from_secs_f64(seq as f64 / FPS);
        let image = Mat::new_rows_cols_with_default(120, 160, CV_8UC3, Scalar::all(60.0)).unwrap();
        StreamEvent::Item(Verdict {
            frame: Frame {
                image,
                seq,
                at: Timestamp {
                    pts,
                    wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + pts,
                },
            },
            boxes: if motion {
                vec![Rect::new(10, 10, 40, 40)]
            } else {
                Vec::new()
            },
            warming_up: false,
        })
    }

    /// A recorder of 2 s clips over a spool in a temporary folder (kept alive by the returned guard).
    fn recorder_of_2s_clips() -> (tempfile::TempDir, Spool, Recorder) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let settings = RecorderSettings {
            camera_name: "cam".into(),
            record_duration: Duration::from_secs(2),
        };
        let recorder = Recorder::new(settings, spool.clone());
        (dir, spool, recorder)
    }

    #[test]
    fn continuous_motion_gives_back_to_back_clips_that_hold_every_frame() {
        let (_dir, spool, mut recorder) = recorder_of_2s_clips();
        let mut clips = Vec::new();
        let started = StreamEvent::Started(StreamInfo {
            size: Size::new(160, 120),
            fps: FPS,
        });
        clips.extend(recorder.handle(started).unwrap());
        for seq in 0..75 {
            clips.extend(recorder.handle(verdict(seq, true)).unwrap());
        }
        clips.extend(
            recorder
                .handle(StreamEvent::Ended {
                    reason: "test".into(),
                })
                .unwrap(),
        );

        let frames: Vec<u64> = clips.iter().map(|c| c.frames).collect();
        assert_eq!(frames, [30, 30, 15]);
        assert!(clips.iter().all(|c| c.boxes == c.frames));
        let names: std::collections::HashSet<_> =
            clips.iter().map(|c| c.clip.blob_name.clone()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(spool.pending().unwrap().len(), 3);
        let left_open = spool.salvage_interrupted("cam", inspect_clip).unwrap();
        assert!(
            left_open.salvaged.is_empty() && left_open.quarantined.is_empty(),
            "no clip was left open: {left_open:?}"
        );
        for clip in &clips {
            let inspected = inspect_clip(&clip.clip.path).unwrap();
            assert_eq!(
                inspected.frames, clip.frames,
                "the file holds every frame written"
            );
        }
    }

    #[test]
    fn frames_before_a_stream_start_or_without_motion_record_nothing() {
        let (_dir, spool, mut recorder) = recorder_of_2s_clips();
        assert!(recorder.handle(verdict(0, true)).unwrap().is_none());
        recorder
            .handle(StreamEvent::Started(StreamInfo {
                size: Size::new(160, 120),
                fps: FPS,
            }))
            .unwrap();
        for seq in 1..40 {
            assert!(recorder.handle(verdict(seq, false)).unwrap().is_none());
        }
        assert!(recorder.finish().unwrap().is_none());
        assert!(spool.pending().unwrap().is_empty());
    }
}
