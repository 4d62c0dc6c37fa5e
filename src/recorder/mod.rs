//! The recorder stage: cuts clips out of the verdict stream and hands finished ones to the spool.
//!
//! Receives `StreamEvent<Verdict>`; emits `ClipReady` (the clip committed to the spool, which wakes the
//! uploader). The schedule decides when a clip starts and ends (`RECORD_MODE`); the frames kept from
//! before the motion (`PRE_ROLL`) open it. Every frame written carries the detector's boxes. With each
//! clip go a snapshot (the frame with the most motion) and an event record. A clip cut short by a camera
//! drop, a resolution change or shutdown is closed properly and kept.

mod annotate;
mod backlog;
mod event_record;
mod events;
mod schedule;
mod writer;

use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, TryRecvError};
use tracing::{error, info, warn};

pub use annotate::{BOX_BGR, draw_boxes};
pub use event_record::{EventRecord, MotionSample};
pub use events::{ClipEvent, ClipObserver};
pub use schedule::{ClipSchedule, FrameAction};
pub use writer::{ClipWriter, WriterError};

use backlog::{Backlog, Ready};
use event_record::{ClipSummary, EventTracker};

use crate::config::RecorderSettings;
use crate::shutdown::Shutdown;
use crate::spool::{Attachment, ClipFacts, ClipName, Spool, SpooledClip, free_bytes};
use crate::stream::{StreamEvent, StreamInfo, Timestamp, Verdict};

/// A clip that was closed and committed to the spool.
#[derive(Debug, Clone)]
pub struct ClipReady {
    pub clip: SpooledClip,
    /// Stream time of the first frame (pre-roll included), of the frame that started the clip, and of
    /// the last frame.
    pub first_pts: Duration,
    pub motion_pts: Duration,
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
    /// The frame that started the clip (after its pre-roll).
    motion: Timestamp,
    first: Option<Timestamp>,
    last: Timestamp,
    frames: u64,
    boxes: u64,
    event: EventTracker,
}

/// Owns the open clip (if any), the frames not written yet, and the schedule that decides when clips
/// start and end.
pub struct Recorder {
    settings: RecorderSettings,
    spool: Spool,
    schedule: ClipSchedule,
    stream: Option<StreamInfo>,
    open: Option<OpenClip>,
    backlog: Backlog,
    last_stem_second: Option<(u64, u32)>,
    out_of_room: bool,
    last_room_check: Option<Duration>,
    observer: Option<ClipObserver>,
    /// One waiting frame may be written in the next idle moment (granted by each frame in).
    catch_up_granted: bool,
    /// `PRE_ROLL_MAX_MEMORY` cut the pre-roll of this stream, and the log said so.
    pre_roll_cut_reported: bool,
}

impl Recorder {
    pub fn new(settings: RecorderSettings, spool: Spool) -> Self {
        Self {
            schedule: ClipSchedule::new(settings.clips.policy),
            settings,
            spool,
            stream: None,
            open: None,
            backlog: Backlog::default(),
            last_stem_second: None,
            out_of_room: false,
            last_room_check: None,
            observer: None,
            catch_up_granted: false,
            pre_roll_cut_reported: false,
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
                // A pre-roll belongs to its stream: never put an old connection's frames in a new clip.
                self.backlog.clear();
                self.pre_roll_cut_reported = false;
                self.stream = Some(info);
                self.log_pre_roll(info);
                Ok(finished)
            }
            StreamEvent::Item(verdict) => self.on_verdict(verdict),
            StreamEvent::Ended { .. } => {
                let finished = self.finish()?;
                self.backlog.clear();
                self.stream = None;
                Ok(finished)
            }
        }
    }

    /// The stream ended or the service stops: writes what is waiting, closes and commits the open clip.
    pub fn finish(&mut self) -> Result<Option<ClipReady>, RecorderError> {
        self.schedule.on_end();
        self.close_clip()
    }

    /// True while an open clip has frames waiting for the encoder and one may be written now.
    pub fn is_behind(&self) -> bool {
        self.catch_up_granted && self.open.is_some() && !self.backlog.is_empty()
    }

    /// True once after an open clip caught up with the camera: the pictures decoded for it are freed.
    pub fn caught_up(&mut self) -> bool {
        self.backlog.take_caught_up()
    }

    /// Writes one waiting frame into the open clip (the recorder had nothing else to do). One per frame
    /// in: the waiting frames are written at twice the camera's rate, not as fast as the CPU allows,
    /// which would starve the camera and detector threads and fill their queues with pictures (3 MiB
    /// each at 1080p; measured: 13 of them at the peak while a 3 s pre-roll caught up in 1.1 s).
    pub fn catch_up(&mut self) -> Result<(), RecorderError> {
        self.catch_up_granted = false;
        match (self.open.as_mut(), self.backlog.pop()) {
            (Some(open), Some(ready)) => write_frame(open, ready),
            _ => Ok(()),
        }
    }

    /// Writes what is waiting, then closes and commits the open clip, without touching the schedule
    /// (which may have opened the next).
    fn close_clip(&mut self) -> Result<Option<ClipReady>, RecorderError> {
        let Some(mut open) = self.open.take() else {
            return Ok(None);
        };
        let clip = open.name.blob_name();
        let mut drained = Ok(());
        while let Some(ready) = self.backlog.pop() {
            drained = drained.and(write_frame(&mut open, ready));
        }
        if let Err(e) = drained {
            error!(clip = %clip, error = %e, "frames lost while closing the clip");
        }
        let stream = self
            .stream
            .unwrap_or(StreamInfo::new(open.writer.size(), 0.0));
        let frame_interval = if stream.fps > 0.0 {
            Duration::from_secs_f64(1.0 / stream.fps)
        } else {
            Duration::ZERO
        };
        let attachments = self.attachments(&open, stream, frame_interval);
        open.writer
            .finish()
            .map_err(|source| RecorderError::Writer {
                clip: clip.clone(),
                source,
            })?;
        let first = open.first.unwrap_or(open.last);
        let facts = ClipFacts {
            seconds: (open.last.pts.saturating_sub(first.pts) + frame_interval).as_secs_f64(),
            frames: open.frames,
            boxes: open.boxes,
            salvaged: false,
        };
        let spooled = self
            .spool
            .commit(&open.name, &self.settings.camera_name, &facts, &attachments)
            .map_err(|source| RecorderError::Spool { clip, source })?;
        Ok(Some(ClipReady {
            clip: spooled,
            first_pts: first.pts,
            motion_pts: open.motion.pts,
            last_pts: open.last.pts,
            frames: open.frames,
            boxes: open.boxes,
        }))
    }

    /// The snapshot and the event record of a closed clip. A failure costs the attachment, never the clip.
    fn attachments(
        &self,
        open: &OpenClip,
        stream: StreamInfo,
        frame_interval: Duration,
    ) -> Vec<(Attachment, Vec<u8>)> {
        let clip = open.name.blob_name();
        let mut attachments = Vec::new();
        let snapshot = match open.event.snapshot_jpeg() {
            Ok(jpeg) => jpeg,
            Err(e) => {
                warn!(clip = %clip, error = %e, "cannot encode the snapshot; the clip goes without one");
                None
            }
        };
        let snapshot_name = snapshot
            .as_ref()
            .map(|_| Attachment::Snapshot.blob_name(&clip));
        if let Some(jpeg) = snapshot {
            attachments.push((Attachment::Snapshot, jpeg));
        }
        let record = open.event.record(
            ClipSummary {
                camera: self.settings.camera_name.clone(),
                blob_name: clip.clone(),
                last_pts: open.last.pts,
                last_wall: open.last.wall,
                frame_interval,
                frames: open.frames,
                fps: stream.fps,
                width: stream.size.width,
                height: stream.size.height,
            },
            snapshot_name,
        );
        match serde_json::to_vec_pretty(&record) {
            Ok(json) => attachments.push((Attachment::EventRecord, json)),
            Err(e) => warn!(clip = %clip, error = %e, "cannot write the event record"),
        }
        attachments
    }

    fn on_verdict(&mut self, verdict: Verdict) -> Result<Option<ClipReady>, RecorderError> {
        let Some(stream) = self.stream else {
            return Ok(None);
        };
        self.catch_up_granted = true;
        let now = verdict.frame.at.pts;
        let image_size = verdict.frame.image.size();
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
        let action = self.schedule.on_frame(now, verdict.has_motion());
        if action.finish {
            finished = self.close_clip()?;
        }
        let check_room = action.start
            || self
                .open
                .as_ref()
                .is_some_and(|o| o.frames % stream.fps.round().max(1.0) as u64 == 0);
        if check_room && !self.room_to_record(now) {
            // Close what we have cleanly rather than let the disk fill mid-write.
            let closed = self.finish()?;
            self.keep_as_pre_roll(verdict);
            return Ok(closed.or(finished));
        }
        if action.start {
            self.trim_pre_roll(now);
            self.start(
                verdict.frame.at,
                StreamInfo {
                    size: image_size,
                    ..stream
                },
            )?;
        }
        match self.open.as_mut() {
            Some(open) => {
                // One frame out for each frame in: the pre-roll drains as fast as frames arrive, and
                // faster when the recorder is idle (`catch_up`).
                self.backlog.push(verdict);
                if let Some(next) = self.backlog.pop() {
                    write_frame(open, next)?;
                }
            }
            None => self.keep_as_pre_roll(verdict),
        }
        Ok(finished)
    }

    fn keep_as_pre_roll(&mut self, verdict: Verdict) {
        let now = verdict.frame.at.pts;
        self.backlog.push(verdict);
        self.trim_pre_roll(now);
    }

    /// Keeps the last `PRE_ROLL` of frames; says once per stream when `PRE_ROLL_MAX_MEMORY` cuts it.
    fn trim_pre_roll(&mut self, now: Duration) {
        let clips = self.settings.clips;
        let cut = self
            .backlog
            .keep_pre_roll(now, clips.pre_roll, clips.pre_roll_max_bytes);
        if cut && !self.pre_roll_cut_reported {
            self.pre_roll_cut_reported = true;
            warn!(
                pre_roll = %humantime::format_duration(clips.pre_roll),
                max_mib = (clips.pre_roll_max_bytes as f64 / 1048576.0).round(),
                "the camera's packets for PRE_ROLL take more than PRE_ROLL_MAX_MEMORY; the pre-roll is shorter"
            );
        }
    }

    fn start(&mut self, motion: Timestamp, stream: StreamInfo) -> Result<(), RecorderError> {
        let first = self.backlog.first().unwrap_or(motion);
        let name = self.unique_name(first.wall);
        let path = self
            .spool
            .recording_path(&name)
            .map_err(|source| RecorderError::Spool {
                clip: name.blob_name(),
                source,
            })?;
        let writer = ClipWriter::create(&path, stream.size, stream.fps, stream.colorimetry)
            .map_err(|source| RecorderError::Writer {
                clip: name.blob_name(),
                source,
            });
        let writer = match writer {
            Ok(writer) => writer,
            Err(e) => {
                // Forget the schedule's clip too, so the next motion frame tries again.
                self.schedule.on_end();
                return Err(e);
            }
        };
        let pre_roll = motion.pts.saturating_sub(first.pts);
        info!(
            clip = %name.blob_name(),
            fps = stream.fps,
            pre_roll = format!("{:.1}s", pre_roll.as_secs_f64()),
            pre_roll_frames = self.backlog.len(),
            pre_roll_kib = self.backlog.bytes() / 1024,
            "motion: recording"
        );
        self.notify(ClipEvent::Started {
            blob_name: &name.blob_name(),
            camera: &self.settings.camera_name,
            wall: first.wall,
        });
        self.open = Some(OpenClip {
            name,
            writer,
            motion,
            first: None,
            last: first,
            frames: 0,
            boxes: 0,
            event: EventTracker::new((motion.pts, motion.wall)),
        });
        Ok(())
    }

    /// Says once per stream how long the pre-roll is.
    fn log_pre_roll(&self, info: StreamInfo) {
        let clips = self.settings.clips;
        if clips.pre_roll.is_zero() {
            return;
        }
        info!(
            pre_roll = %humantime::format_duration(clips.pre_roll),
            frames = (clips.pre_roll.as_secs_f64() * info.fps).ceil(),
            max_mib = (clips.pre_roll_max_bytes as f64 / 1048576.0).round(),
            "pre-roll buffer (the camera's packets, decoded when a clip opens)"
        );
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

/// Draws the boxes on a frame and writes it into the clip. A frame of another size (from before a
/// resolution change) cannot go into this clip and is left out.
fn write_frame(open: &mut OpenClip, ready: Ready) -> Result<(), RecorderError> {
    let Ready {
        at,
        mut boxes,
        mut image,
    } = ready;
    if image.size() != open.writer.size() {
        return Ok(());
    }
    if at.pts < open.motion.pts {
        // Pre-roll: the time before the motion is shown as it was.
        boxes.clear();
    }
    draw_boxes(&mut image, &boxes)?;
    open.event.on_frame(at.pts, at.wall, &boxes, &image)?;
    open.writer
        .write(image)
        .map_err(|source| RecorderError::Writer {
            clip: open.name.blob_name(),
            source,
        })?;
    open.frames += 1;
    open.boxes += boxes.len() as u64;
    open.first.get_or_insert(at);
    open.last = at;
    Ok(())
}

/// Decodes a clip file to the end: how many frames it holds, and how long they last. For recordings a
/// crash left behind, to tell a salvageable file from a broken one.
pub fn inspect_clip(path: &std::path::Path) -> Result<ClipFacts, String> {
    use crate::camera::{CameraStream, CaptureError};
    let mut stream = CameraStream::open_file(path).map_err(|e| e.to_string())?;
    let fps = stream.info().fps;
    let mut frames = 0_u64;
    loop {
        match stream.read() {
            Ok(_) => frames += 1,
            Err(CaptureError::Ended) => break,
            // A file cut off mid-fragment: readable up to its last whole fragment.
            Err(_) if frames > 0 => break,
            Err(e) => return Err(e.to_string()),
        }
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
/// Idle moments go to writing the frames an open clip still has waiting (one per frame in).
pub fn run(mut recorder: Recorder, input: &Receiver<StreamEvent<Verdict>>, shutdown: &Shutdown) {
    loop {
        let event = if recorder.is_behind() && !shutdown.is_requested() {
            match input.try_recv() {
                Ok(event) => Some(event),
                Err(TryRecvError::Empty) => {
                    if let Err(e) = recorder.catch_up() {
                        error!(error = %e, "recording failed");
                    }
                    if recorder.caught_up() {
                        crate::memory::return_free_memory();
                    }
                    continue;
                }
                Err(TryRecvError::Disconnected) => None,
            }
        } else {
            crossbeam_channel::select! {
                recv(input) -> event => event.ok(),
                recv(shutdown.closed()) -> _ => None,
            }
        };
        let last = event.is_none();
        // After a clip, a stream boundary or a pre-roll written many frames were just freed: give
        // the pages back.
        let mut frees_frames = matches!(
            event,
            Some(StreamEvent::Started(_) | StreamEvent::Ended { .. })
        );
        let result = match event {
            Some(event) => recorder.handle(event),
            None => recorder.finish(),
        };
        match result {
            Ok(Some(ready)) => {
                log_clip(&ready);
                recorder.notify(ClipEvent::Recorded(&ready));
                frees_frames = true;
            }
            Ok(None) => {}
            Err(e) => error!(error = %e, "recording failed"),
        }
        if frees_frames || recorder.caught_up() {
            crate::memory::return_free_memory();
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClipPolicy, ClipSettings};
    use crate::stream::Frame;
    use opencv::core::{Rect, Size};

    const FPS: f64 = 15.0;

    fn verdict(seq: u64, motion: bool) -> StreamEvent<Verdict> {
        let pts = Duration::from_secs_f64(seq as f64 / FPS);
        let image = crate::i420::I420Image::filled(Size::new(160, 120), [67, 128, 128]).unwrap();
        StreamEvent::Item(Verdict {
            frame: Frame {
                image,
                seq,
                at: Timestamp {
                    pts,
                    wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + pts,
                },
                encoded: Default::default(),
            },
            boxes: if motion {
                vec![Rect::new(10, 10, 40, 40)]
            } else {
                Vec::new()
            },
            warming_up: false,
            sustained: true,
        })
    }

    /// A recorder of fixed 2 s clips with `pre_roll` over a spool in a temporary folder (kept alive by
    /// the returned guard).
    fn recorder_of_2s_clips_with(pre_roll: Duration) -> (tempfile::TempDir, Spool, Recorder) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let settings = RecorderSettings {
            camera_name: "cam".into(),
            clips: ClipSettings {
                policy: ClipPolicy::Fixed {
                    duration: Duration::from_secs(2),
                },
                pre_roll,
                pre_roll_max_bytes: u64::MAX,
            },
        };
        let recorder = Recorder::new(settings, spool.clone());
        (dir, spool, recorder)
    }

    fn recorder_of_2s_clips() -> (tempfile::TempDir, Spool, Recorder) {
        recorder_of_2s_clips_with(Duration::ZERO)
    }

    fn started() -> StreamEvent<Verdict> {
        StreamEvent::Started(StreamInfo::new(Size::new(160, 120), FPS))
    }

    #[test]
    fn the_pre_roll_opens_the_clip_without_boxes_and_drains_while_frames_arrive() {
        let (_dir, _spool, mut recorder) = recorder_of_2s_clips_with(Duration::from_secs(1));
        let mut clips = Vec::new();
        clips.extend(recorder.handle(started()).unwrap());
        // 3 s still, then motion for good.
        for seq in 0..45 {
            clips.extend(recorder.handle(verdict(seq, false)).unwrap());
        }
        clips.extend(recorder.handle(verdict(45, true)).unwrap());
        assert!(recorder.is_behind(), "the pre-roll waits for the encoder");
        recorder.catch_up().unwrap();
        for seq in 46..60 {
            clips.extend(recorder.handle(verdict(seq, true)).unwrap());
        }
        clips.extend(recorder.finish().unwrap());

        assert_eq!(clips.len(), 1);
        let clip = &clips[0];
        // 1 s of pre-roll (frames 30..=44) and the 15 frames from the first motion.
        assert_eq!((clip.frames, clip.boxes), (30, 15));
        assert_eq!(clip.first_pts, Duration::from_secs_f64(30.0 / FPS));
        assert_eq!(clip.motion_pts, Duration::from_secs_f64(45.0 / FPS));
        assert_eq!(inspect_clip(&clip.clip.path).unwrap().frames, 30);
        let attachments = clip.clip.attachments();
        let kinds: Vec<_> = attachments.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(kinds, [Attachment::Snapshot, Attachment::EventRecord]);
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&attachments[1].1).unwrap()).unwrap();
        assert_eq!(record["pre_roll_seconds"], 1.0);
        assert_eq!(record["frames"], 30);
        assert_eq!(record["motion"].as_array().unwrap().len(), 15);
        assert_eq!(record["motion"][0]["t"], 1.0);
        assert_eq!(
            record["motion"][0]["boxes"][0],
            serde_json::json!([10, 10, 40, 40])
        );
        assert_eq!(record["clip"], clip.clip.blob_name.as_str());
    }

    /// Grey level of source frame `n` in `video_of_numbered_frames`: every frame is told apart by it.
    fn grey_of(n: u64) -> f64 {
        20.0 + 2.0 * n as f64
    }

    /// A 160x120 15 fps H.264 video whose frame n is a flat grey of `grey_of(n)`, with a keyframe every
    /// 2 s (the writer's interval, as a camera's).
    fn video_of_numbered_frames(path: &std::path::Path, frames: u64) {
        let size = Size::new(160, 120);
        let mut writer =
            ClipWriter::create(path, size, FPS, crate::i420::Colorimetry::default()).unwrap();
        for n in 0..frames {
            let grey = grey_of(n) as u8;
            writer
                .write(crate::i420::I420Image::filled(size, [grey, 128, 128]).unwrap())
                .unwrap();
        }
        writer.finish().unwrap();
    }

    /// The grey level of every frame of a clip, in order.
    fn greys_in(clip: &std::path::Path) -> Vec<f64> {
        let mut stream = crate::camera::CameraStream::open_file(clip).unwrap();
        let mut greys = Vec::new();
        while let Ok(frame) = stream.read() {
            greys.push(opencv::core::mean_def(&frame.image.luma().unwrap()).unwrap()[0]);
        }
        greys
    }

    /// The same video as `video_of_numbered_frames`, encoded by ffmpeg with `codec` (arguments, which
    /// set the keyframe interval and the GOP structure).
    fn video_of_numbered_frames_by_ffmpeg(path: &std::path::Path, frames: u64, codec: &[&str]) {
        // Frame n: a flat grey of `grey_of(n)`.
        let numbered = "color=c=black:s=160x120:r=15,geq=lum='20+2*N':cb=128:cr=128,format=yuv420p";
        crate::test_videos::lavfi_video(path, numbered, frames, codec);
    }

    #[test]
    fn the_pre_roll_is_kept_as_packets_and_decoded_back_into_the_clip() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("numbered.mp4");
        video_of_numbered_frames(&source, 90);
        pre_roll_packets_decode_back_into_the_clips(&source);
    }

    #[test]
    fn a_pre_roll_with_b_frames_or_in_h265_with_open_gops_decodes_back_into_the_clip() {
        let dir = tempfile::tempdir().unwrap();
        let b_frames = dir.path().join("b-frames.mp4");
        video_of_numbered_frames_by_ffmpeg(
            &b_frames,
            90,
            &[
                "-c:v",
                "libx264",
                "-bf",
                "2",
                "-g",
                "30",
                "-sc_threshold",
                "0",
            ],
        );
        pre_roll_packets_decode_back_into_the_clips(&b_frames);
        let h265 = dir.path().join("h265.mp4");
        video_of_numbered_frames_by_ffmpeg(
            &h265,
            90,
            &[
                "-c:v",
                "libx265",
                "-x265-params",
                "log-level=error:keyint=30:min-keyint=30:scenecut=0:open-gop=0:bframes=2",
            ],
        );
        pre_roll_packets_decode_back_into_the_clips(&h265);
        // Open GOPs: the frames shown just before each keyframe (CRA) are decoded after it, from the
        // pictures before it; both pre-rolls have them inside their window.
        let open_gop = dir.path().join("h265-open-gop.mp4");
        video_of_numbered_frames_by_ffmpeg(
            &open_gop,
            90,
            &[
                "-c:v",
                "libx265",
                "-x265-params",
                "log-level=error:keyint=30:min-keyint=30:scenecut=0:open-gop=1:bframes=2",
            ],
        );
        pre_roll_packets_decode_back_into_the_clips(&open_gop);
    }

    /// Runs the recorder over `source` (90 numbered frames, keyframes at 0, 30 and 60) with a 1 s
    /// pre-roll and checks that every frame of both clips is the right picture.
    fn pre_roll_packets_decode_back_into_the_clips(source: &std::path::Path) {
        let (_spool_dir, _spool, mut recorder) = recorder_of_2s_clips_with(Duration::from_secs(1));
        let mut camera = crate::camera::CameraStream::open_file(source).unwrap();
        let mut clips = Vec::new();
        clips.extend(recorder.handle(started()).unwrap());
        let mut pre_roll_bytes = 0;
        // Frame 40 is dropped, as the camera stage drops one for a busy detector: its packets go with
        // frame 41.
        let dropped = 40;
        let mut carried = crate::stream::Encoded::default();
        for seq in 0..90 {
            let mut frame = camera.read().unwrap();
            frame.encoded.prepend(std::mem::take(&mut carried));
            if seq == dropped {
                carried = frame.encoded;
                continue;
            }
            // Motion in frames 50-59 and from 85: the second clip's pre-roll starts right after the
            // first clip, in the middle of a keyframe interval that clip wrote.
            let motion = (50..60).contains(&seq) || seq >= 85;
            let StreamEvent::Item(mut verdict) = verdict(seq, motion) else {
                unreachable!()
            };
            verdict.frame.image = frame.image;
            verdict.frame.encoded = frame.encoded;
            if seq == 49 {
                pre_roll_bytes = recorder.backlog.bytes();
            }
            clips.extend(recorder.handle(StreamEvent::Item(verdict)).unwrap());
        }
        clips.extend(recorder.finish().unwrap());

        let picture_bytes = 160 * 120 * 3 / 2;
        assert!(
            pre_roll_bytes < 2 * picture_bytes,
            "15 frames of pre-roll held as packets and one picture: {pre_roll_bytes} bytes"
        );
        assert_eq!(clips.len(), 2, "{}", source.display());
        // Clip 1: 1 s of pre-roll (frames 35-49 but 40, decoded from the keyframe at 30) and 2 s of
        // recording.
        // Clip 2: frames 80-84 (the pre-roll after clip 1, decoded from the keyframe at 60 that clip 1
        // wrote) and 85-89.
        for (clip, first) in clips.iter().zip([35_u64, 80]) {
            assert_eq!(clip.first_pts, Duration::from_secs_f64(first as f64 / FPS));
            let greys = greys_in(&clip.clip.path);
            assert_eq!(greys.len() as u64, clip.frames);
            let sources = (first..).filter(|&n| n != dropped);
            let path = source;
            for (i, (grey, source)) in greys.iter().zip(sources).enumerate() {
                let expected = grey_of(source);
                assert!(
                    (grey - expected).abs() < 1.5,
                    "{}: frame {i} of the clip from frame {first}: grey {grey:.1}, not {expected} (frame {source})",
                    path.display()
                );
            }
        }
        assert_eq!(clips[1].frames, 10);
    }

    #[test]
    fn back_to_back_clips_never_share_frames_through_the_pre_roll() {
        let (_dir, _spool, mut recorder) = recorder_of_2s_clips_with(Duration::from_secs(1));
        let mut clips = Vec::new();
        clips.extend(recorder.handle(started()).unwrap());
        for seq in 0..75 {
            clips.extend(recorder.handle(verdict(seq, true)).unwrap());
        }
        clips.extend(recorder.finish().unwrap());
        let frames: Vec<u64> = clips.iter().map(|c| c.frames).collect();
        assert_eq!(frames, [30, 30, 15], "every frame exactly once");
    }

    #[test]
    fn continuous_motion_gives_back_to_back_clips_that_hold_every_frame() {
        let (_dir, spool, mut recorder) = recorder_of_2s_clips();
        let mut clips = Vec::new();
        let started = StreamEvent::Started(StreamInfo::new(Size::new(160, 120), FPS));
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
            .handle(StreamEvent::Started(StreamInfo::new(
                Size::new(160, 120),
                FPS,
            )))
            .unwrap();
        for seq in 1..40 {
            assert!(recorder.handle(verdict(seq, false)).unwrap().is_none());
        }
        assert!(recorder.finish().unwrap().is_none());
        assert!(spool.pending().unwrap().is_empty());
    }
}
