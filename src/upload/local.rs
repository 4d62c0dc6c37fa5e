//! A sink that copies clips into a local directory (`CLIPS_DIR`), for use without Azure and for `detect`.

use std::path::{Path, PathBuf};

use super::{ClipSink, UploadError};
use crate::spool::{ClipMeta, SpooledClip, sidecar_path};

pub struct LocalDirSink {
    dir: PathBuf,
}

impl LocalDirSink {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Where a clip ends up.
    pub fn destination(&self, clip: &SpooledClip) -> PathBuf {
        self.dir.join(&clip.blob_name)
    }
}

impl ClipSink for LocalDirSink {
    async fn upload(&self, clip: &SpooledClip, meta: &ClipMeta) -> Result<(), UploadError> {
        let destination = self.destination(clip);
        if let Some(parent) = destination.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // Copy to a temporary name, sync, then rename: a half-copied file never looks finished.
        let partial = destination.with_extension("mp4.part");
        tokio::fs::copy(&clip.path, &partial).await?;
        tokio::fs::File::open(&partial).await?.sync_all().await?;
        tokio::fs::rename(&partial, &destination).await?;
        // The clip's facts beside it, as the sidecar in the spool.
        let sidecar = sidecar_path(&destination);
        tokio::fs::write(
            &sidecar,
            serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?,
        )
        .await?;
        Ok(())
    }

    async fn probe(&self) -> Result<String, UploadError> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let marker = self.dir.join(".dachavideo-write-test");
        tokio::fs::write(&marker, b"ok").await?;
        tokio::fs::remove_file(&marker).await?;
        Ok(format!("{} is writable", self.describe()))
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.dir.display())
    }

    fn location(&self, blob_name: &str) -> String {
        let path = self.dir.join(blob_name);
        std::path::absolute(&path)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}
