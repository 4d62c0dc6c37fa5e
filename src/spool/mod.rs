//! The spool: the durable hand-off between the recorder and the uploader.
//!
//! A clip is written under `<root>/.recording/<name>` and, once closed, synced and renamed to
//! `<root>/<name>`, where `<name>` is its blob name (`<camera>/<YYYY-MM-DD>/<YYYYMMDDTHHMMSSZ>.mp4`). So a
//! crash never leaves a half-written file that looks finished, and clips that wait for an upload survive a
//! restart. The uploader takes the oldest first and removes a clip only after its upload was confirmed.

mod clip_name;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Notify;
use tracing::warn;

pub use clip_name::ClipName;

const RECORDING_DIR: &str = ".recording";
const CLIP_EXTENSION: &str = "mp4";

/// A finished clip waiting on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledClip {
    pub path: PathBuf,
    /// The name it gets in storage, `/`-separated.
    pub blob_name: String,
    pub size: u64,
}

/// Handle to the spool directory; clones share the "a clip is ready" notification.
#[derive(Clone)]
pub struct Spool {
    root: PathBuf,
    clip_ready: Arc<Notify>,
}

impl Spool {
    /// Opens (creating if needed) a spool at `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join(RECORDING_DIR))?;
        Ok(Self {
            root: root.to_path_buf(),
            clip_ready: Arc::new(Notify::new()),
        })
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

    /// Makes a closed recording a finished clip: syncs it, renames it into place, wakes the uploader.
    pub fn commit(&self, name: &ClipName) -> io::Result<SpooledClip> {
        let recording = self.root.join(RECORDING_DIR).join(name.relative_path());
        let finished = self.root.join(name.relative_path());
        fs::File::open(&recording)?.sync_all()?;
        if let Some(parent) = finished.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(&recording, &finished)?;
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

    /// Deletes a clip whose upload was confirmed.
    pub fn remove(&self, clip: &SpooledClip) -> io::Result<()> {
        fs::remove_file(&clip.path)
    }

    /// Completes when a clip was committed since the last call (or one is already signalled).
    pub async fn clip_committed(&self) {
        self.clip_ready.notified().await;
    }

    /// Recordings an earlier run left open (crash, power cut). Their fragmented MP4 is readable up to the
    /// last fragment, so they are committed as finished clips rather than lost.
    pub fn salvage_interrupted(&self) -> io::Result<Vec<SpooledClip>> {
        let recording_root = self.root.join(RECORDING_DIR);
        let mut salvaged = Vec::new();
        for entry in walkdir::WalkDir::new(&recording_root).min_depth(1) {
            let entry = entry.map_err(io::Error::other)?;
            if !entry.file_type().is_file() {
                continue;
            }
            let Some(name) = entry
                .path()
                .strip_prefix(&recording_root)
                .ok()
                .and_then(ClipName::from_relative_path)
            else {
                warn!(path = %entry.path().display(), "unexpected file in the spool's recording folder; left alone");
                continue;
            };
            if entry.metadata().map_err(io::Error::other)?.len() == 0 {
                warn!(path = %entry.path().display(), "interrupted recording is empty; removed");
                fs::remove_file(entry.path())?;
                continue;
            }
            let clip = self.commit(&name)?;
            warn!(clip = %clip.blob_name, bytes = clip.size, "salvaged a recording interrupted by a crash or power cut");
            salvaged.push(clip);
        }
        Ok(salvaged)
    }
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

    #[test]
    fn committed_clips_are_pending_oldest_first_and_recordings_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let newer = name_at("gate", 1_800_000_100);
        let older = name_at("yard", 1_800_000_000);
        let open = name_at("gate", 1_800_000_200);
        record(&spool, &newer, b"newer");
        record(&spool, &older, b"older");
        record(&spool, &open, b"still recording");
        spool.commit(&newer).unwrap();
        spool.commit(&older).unwrap();
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
        spool.remove(&pending[0]).unwrap();
        assert_eq!(spool.pending().unwrap().len(), 1);
    }

    #[test]
    fn interrupted_recordings_are_salvaged_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let name = name_at("gate", 1_800_000_000);
        record(&spool, &name, b"partial");
        record(&spool, &name_at("gate", 1_800_000_001), b"");
        let reopened = Spool::open(dir.path()).unwrap();
        let salvaged = reopened.salvage_interrupted().unwrap();
        assert_eq!(salvaged.len(), 1);
        assert_eq!(salvaged[0].blob_name, name.blob_name());
        assert_eq!(reopened.pending().unwrap(), salvaged);
    }
}
