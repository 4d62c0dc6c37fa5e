//! A sink that copies clips into a local directory (`CLIPS_DIR`), for use without Azure: the same names
//! as the blobs would have (`<stem>.mp4`, `<stem>.jpg`, `<stem>.json`).

use std::path::{Path, PathBuf};

use super::{ClipSink, UploadError};
use crate::spool::{Attachment, ClipMeta, SpooledClip};

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
    async fn upload(&self, clip: &SpooledClip, _meta: &ClipMeta) -> Result<(), UploadError> {
        let destination = self.destination(clip);
        let partial = partial_path(&destination).await?;
        tokio::fs::copy(&clip.path, &partial).await?;
        finish_copy(&partial, &destination).await
    }

    async fn upload_attachment(
        &self,
        blob_name: &str,
        _kind: Attachment,
        bytes: Vec<u8>,
    ) -> Result<(), UploadError> {
        let destination = self.dir.join(blob_name);
        let partial = partial_path(&destination).await?;
        tokio::fs::write(&partial, bytes).await?;
        finish_copy(&partial, &destination).await
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

/// A temporary name beside `destination` (its directory created): a half-copied file never looks finished.
async fn partial_path(destination: &Path) -> std::io::Result<PathBuf> {
    if let Some(parent) = destination.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut partial = destination.as_os_str().to_owned();
    partial.push(".part");
    Ok(PathBuf::from(partial))
}

/// Syncs the temporary copy and renames it into place.
async fn finish_copy(partial: &Path, destination: &Path) -> Result<(), UploadError> {
    tokio::fs::File::open(partial).await?.sync_all().await?;
    tokio::fs::rename(partial, destination).await?;
    Ok(())
}
