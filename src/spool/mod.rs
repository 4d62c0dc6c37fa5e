//! The spool: the durable hand-off between the recorder and the uploader.
//!
//! A clip is written under `<root>/.recording/<name>` and, once closed, synced and renamed to
//! `<root>/<name>`, where `<name>` is its blob name (`<camera>/<YYYY-MM-DD>/<YYYYMMDDTHHMMSSZ>.mp4`). So a
//! crash never leaves a half-written file that looks finished, and clips that wait for an upload survive a
//! restart. The uploader takes the oldest first and removes a clip only after its upload was confirmed.
//! A clip's attachments (snapshot, event record) are committed before it and removed with it.

mod attachment;
mod clip_name;
mod limits;
mod sidecar;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Notify;
use tracing::{error, warn};

pub use attachment::Attachment;
pub use clip_name::ClipName;
pub use limits::{SpoolLimits, free_bytes};
pub use sidecar::{ClipFacts, ClipMeta, base64_md5, md5_of_file, sidecar_path};

const RECORDING_DIR: &str = ".recording";
const QUARANTINE_DIR: &str = ".quarantine";
const CLIP_EXTENSION: &str = "mp4";

/// A finished clip waiting on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledClip {
    pub path: PathBuf,
    /// The name it gets in storage, `/`-separated.
    pub blob_name: String,
    pub size: u64,
}

impl SpooledClip {
    /// The attachments this clip has on disk, with their paths.
    pub fn attachments(&self) -> Vec<(Attachment, PathBuf)> {
        Attachment::ALL
            .into_iter()
            .map(|kind| (kind, kind.spool_path(&self.path)))
            .filter(|(_, path)| path.exists())
            .collect()
    }
}

/// Handle to the spool directory; clones share the "a clip is ready" notification.
#[derive(Clone)]
pub struct Spool {
    root: PathBuf,
    clip_ready: Arc<Notify>,
    limits: SpoolLimits,
}

impl Spool {
    /// Opens (creating if needed) a spool at `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join(RECORDING_DIR))?;
        Ok(Self {
            root: root.to_path_buf(),
            clip_ready: Arc::new(Notify::new()),
            limits: SpoolLimits::NONE,
        })
    }

    /// The same spool, bounded by `limits` (enforced after every commit and by [`Spool::enforce_limits`]).
    pub fn with_limits(self, limits: SpoolLimits) -> Self {
        Self { limits, ..self }
    }

    /// Deletes the oldest finished clips while the spool holds more than its maximum or its filesystem
    /// has less free space than its floor; the newest clip is always kept. Returns what was deleted.
    pub fn enforce_limits(&self) -> io::Result<Vec<SpooledClip>> {
        let mut pending = self.pending()?;
        let mut total: u64 = pending.iter().map(|c| c.size).sum();
        let mut dropped = Vec::new();
        while pending.len() > 1 {
            let free = free_bytes(&self.root)?;
            if total <= self.limits.max_bytes && free >= self.limits.min_free_bytes {
                break;
            }
            let oldest = pending.remove(0);
            self.remove(&oldest)?;
            total -= oldest.size;
            error!(
                clip = %oldest.blob_name,
                bytes = oldest.size,
                spool_bytes = total,
                free_bytes = free,
                max_bytes = self.limits.max_bytes,
                min_free_bytes = self.limits.min_free_bytes,
                "spool full: deleted the oldest clip before it could be uploaded"
            );
            dropped.push(oldest);
        }
        Ok(dropped)
    }

    /// Whether the spool's filesystem has more free space than the floor (true when it cannot tell).
    pub fn has_room(&self) -> bool {
        free_bytes(&self.root).map_or(true, |free| free >= self.limits.min_free_bytes)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a clip is written while it is being recorded (its directory exists on return).
    pub fn recording_path(&self, name: &ClipName) -> io::Result<PathBuf> {
        let path = self.root.join(RECORDING_DIR).join(name.relative_path());
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        Ok(path)
    }

    /// True when a finished or recording clip of this name exists.
    pub fn contains(&self, name: &ClipName) -> bool {
        self.root.join(name.relative_path()).exists()
            || self
                .root
                .join(RECORDING_DIR)
                .join(name.relative_path())
                .exists()
    }

    /// Makes a closed recording a finished clip: syncs it, writes its sidecar and attachments, renames it
    /// into place, wakes the uploader.
    pub fn commit(
        &self,
        name: &ClipName,
        camera: &str,
        facts: &ClipFacts,
        attachments: &[(Attachment, Vec<u8>)],
    ) -> io::Result<SpooledClip> {
        let recording = self.root.join(RECORDING_DIR).join(name.relative_path());
        let finished = self.root.join(name.relative_path());
        fs::File::open(&recording)?.sync_all()?;
        let (digest, bytes) = md5_of_file(&recording)?;
        let meta = ClipMeta {
            camera: camera.to_string(),
            start: name.start_rfc3339(),
            seconds: facts.seconds,
            frames: facts.frames,
            boxes: facts.boxes,
            bytes,
            md5: base64_md5(&digest),
            salvaged: facts.salvaged,
        };
        if let Some(parent) = finished.parent() {
            fs::create_dir_all(parent)?;
        }
        // The sidecar and attachments first: a clip in place always has them.
        write_durably(&sidecar_path(&finished), &serde_json::to_vec_pretty(&meta)?)?;
        for (kind, bytes) in attachments {
            write_durably(&kind.spool_path(&finished), bytes)?;
        }
        fs::rename(&recording, &finished)?;
        if let Err(e) = self.enforce_limits() {
            error!(error = %e, "cannot apply the spool's size limits");
        }
        if let Some(parent) = finished.parent() {
            // Make the rename itself durable (power cuts on SD cards).
            fs::File::open(parent)?.sync_all()?;
        }
        let clip = SpooledClip {
            size: fs::metadata(&finished)?.len(),
            path: finished,
            blob_name: name.blob_name(),
        };
        self.clip_ready.notify_one();
        Ok(clip)
    }

    /// Finished clips, oldest first.
    pub fn pending(&self) -> io::Result<Vec<SpooledClip>> {
        let mut clips = Vec::new();
        let walker = walkdir::WalkDir::new(&self.root)
            .min_depth(1)
            .into_iter()
            .filter_entry(|entry| !entry.file_name().to_string_lossy().starts_with('.'));
        for entry in walker {
            let entry = entry.map_err(io::Error::other)?;
            let is_clip = entry.file_type().is_file()
                && entry
                    .path()
                    .extension()
                    .is_some_and(|e| e == CLIP_EXTENSION);
            if !is_clip {
                continue;
            }
            let Ok(relative) = entry.path().strip_prefix(&self.root) else {
                continue;
            };
            let blob_name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            clips.push(SpooledClip {
                size: entry.metadata().map_err(io::Error::other)?.len(),
                path: entry.path().to_path_buf(),
                blob_name,
            });
        }
        clips.sort_by(|a, b| {
            (a.path.file_name(), &a.blob_name).cmp(&(b.path.file_name(), &b.blob_name))
        });
        Ok(clips)
    }

    /// The clip's sidecar; for a clip without one (put there by hand), one made from the file.
    pub fn meta(&self, clip: &SpooledClip) -> io::Result<ClipMeta> {
        match fs::read(sidecar_path(&clip.path)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (digest, bytes) = md5_of_file(&clip.path)?;
                let name = ClipName::from_relative_path(Path::new(&clip.blob_name));
                Ok(ClipMeta {
                    camera: clip
                        .blob_name
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    start: name.map(|n| n.start_rfc3339()).unwrap_or_default(),
                    seconds: 0.0,
                    frames: 0,
                    boxes: 0,
                    bytes,
                    md5: base64_md5(&digest),
                    salvaged: false,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a clip whose upload was confirmed, with its sidecar.
    pub fn remove(&self, clip: &SpooledClip) -> io::Result<()> {
        // Any may be gone already (the limits and the uploader can race for the oldest clip). The clip
        // goes first: what is left of a half-removed set is never uploaded again.
        let attachments = Attachment::ALL.map(|kind| kind.spool_path(&clip.path));
        for path in [clip.path.clone(), sidecar_path(&clip.path)]
            .into_iter()
            .chain(attachments)
        {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Completes when a clip was committed since the last call (or one is already signalled).
    pub async fn clip_committed(&self) {
        self.clip_ready.notified().await;
    }

    /// Recordings an earlier run left open (crash, power cut). `inspect` decodes one and returns what it
    /// holds; a readable one is committed as a finished clip (marked salvaged), an unreadable one is moved
    /// to `.quarantine/` with an error line. Nothing is deleted but empty files.
    pub fn salvage_interrupted(
        &self,
        camera: &str,
        inspect: impl Fn(&Path) -> Result<ClipFacts, String>,
    ) -> io::Result<Salvage> {
        let recording_root = self.root.join(RECORDING_DIR);
        let mut outcome = Salvage::default();
        let files: Vec<PathBuf> = walkdir::WalkDir::new(&recording_root)
            .min_depth(1)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(walkdir::DirEntry::into_path)
            .collect();
        for path in files {
            let Some(name) = path
                .strip_prefix(&recording_root)
                .ok()
                .and_then(ClipName::from_relative_path)
            else {
                warn!(path = %path.display(), "unexpected file in the spool's recording folder; left alone");
                continue;
            };
            if fs::metadata(&path)?.len() == 0 {
                warn!(path = %path.display(), "interrupted recording is empty; removed");
                fs::remove_file(&path)?;
                continue;
            }
            match inspect(&path) {
                Ok(facts) if facts.frames > 0 => {
                    let camera = name.camera().unwrap_or(camera).to_string();
                    let clip = self.commit(
                        &name,
                        &camera,
                        &ClipFacts {
                            salvaged: true,
                            ..facts
                        },
                        &[],
                    )?;
                    warn!(clip = %clip.blob_name, frames = facts.frames, bytes = clip.size,
                        "salvaged a recording interrupted by a crash or power cut");
                    outcome.salvaged.push(clip);
                }
                result => {
                    let reason = result.err().unwrap_or_else(|| "no readable frame".into());
                    let target = self.root.join(QUARANTINE_DIR).join(name.relative_path());
                    if let Some(parent) = target.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    fs::rename(&path, &target)?;
                    error!(path = %target.display(), reason = %reason,
                        "an interrupted recording cannot be read; moved to quarantine, not uploaded");
                    outcome.quarantined.push(target);
                }
            }
        }
        Ok(outcome)
    }
}

/// Writes `bytes` to `path` through a temporary name, synced, so a crash never leaves a half file.
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    fs::write(&partial, bytes)?;
    fs::File::open(&partial)?.sync_all()?;
    fs::rename(&partial, path)
}

/// What [`Spool::salvage_interrupted`] did.
#[derive(Debug, Default)]
pub struct Salvage {
    pub salvaged: Vec<SpooledClip>,
    pub quarantined: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn name_at(camera: &str, secs: u64) -> ClipName {
        ClipName::new(
            camera,
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            0,
        )
    }

    fn record(spool: &Spool, name: &ClipName, bytes: &[u8]) -> PathBuf {
        let path = spool.recording_path(name).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }

    fn facts(frames: u64) -> ClipFacts {
        ClipFacts {
            seconds: frames as f64 / 15.0,
            frames,
            boxes: 3,
            salvaged: false,
        }
    }

    #[test]
    fn committed_clips_are_pending_oldest_first_with_their_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let newer = name_at("gate", 1_800_000_100);
        let older = name_at("yard", 1_800_000_000);
        let open = name_at("gate", 1_800_000_200);
        record(&spool, &newer, b"newer");
        record(&spool, &older, b"older");
        record(&spool, &open, b"still recording");
        let snapshot = (Attachment::Snapshot, b"jpeg".to_vec());
        spool.commit(&newer, "gate", &facts(30), &[]).unwrap();
        spool
            .commit(&older, "yard", &facts(45), &[snapshot])
            .unwrap();
        let pending = spool.pending().unwrap();
        let names: Vec<_> = pending.iter().map(|c| c.blob_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "yard/2027-01-15/20270115T080000Z.mp4",
                "gate/2027-01-15/20270115T080140Z.mp4"
            ]
        );
        assert_eq!(pending[0].size, 5);
        let attachments = pending[0].attachments();
        assert_eq!(attachments.len(), 1);
        assert_eq!(fs::read(&attachments[0].1).unwrap(), b"jpeg");
        assert!(pending[1].attachments().is_empty());
        let meta = spool.meta(&pending[0]).unwrap();
        assert_eq!(
            (meta.camera.as_str(), meta.frames, meta.boxes, meta.bytes),
            ("yard", 45, 3, 5)
        );
        assert_eq!(meta.start, "2027-01-15T08:00:00Z");
        assert_eq!(
            meta.md5,
            base64_md5(&md5_of_file(&pending[0].path).unwrap().0)
        );
        spool.remove(&pending[0]).unwrap();
        assert_eq!(spool.pending().unwrap().len(), 1);
        assert!(
            !sidecar_path(&pending[0].path).exists(),
            "the sidecar goes with the clip"
        );
        assert!(!attachments[0].1.exists(), "and so do its attachments");
    }

    #[test]
    fn readable_interrupted_recordings_are_salvaged_and_broken_ones_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let readable = name_at("gate", 1_800_000_000);
        let broken = name_at("gate", 1_800_000_050);
        record(&spool, &readable, b"partial but readable");
        record(&spool, &broken, b"garbage");
        record(&spool, &name_at("gate", 1_800_000_001), b"");
        let reopened = Spool::open(dir.path()).unwrap();
        let inspect = |path: &Path| {
            if fs::read(path).unwrap().starts_with(b"partial") {
                Ok(facts(20))
            } else {
                Err("not a video".into())
            }
        };
        let outcome = reopened.salvage_interrupted("gate", inspect).unwrap();
        assert_eq!(outcome.salvaged.len(), 1);
        assert_eq!(outcome.salvaged[0].blob_name, readable.blob_name());
        assert!(reopened.meta(&outcome.salvaged[0]).unwrap().salvaged);
        assert_eq!(reopened.pending().unwrap(), outcome.salvaged);
        assert_eq!(outcome.quarantined.len(), 1);
        assert_eq!(
            fs::read(&outcome.quarantined[0]).unwrap(),
            b"garbage",
            "quarantined, never deleted"
        );
    }
}
