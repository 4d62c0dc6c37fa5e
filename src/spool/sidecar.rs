//! The sidecar beside each finished clip in the spool (`<stem>.json`): what the clip is, and its MD5, so
//! the uploader can label the blob and notice a file that changed on disk since it was recorded.

use std::io::Read;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// What the recorder knows about a clip when it closes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipFacts {
    pub seconds: f64,
    pub frames: u64,
    pub boxes: u64,
    /// True for a recording recovered after a crash or power cut.
    pub salvaged: bool,
}

/// The sidecar's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipMeta {
    pub camera: String,
    /// UTC, RFC 3339.
    pub start: String,
    pub seconds: f64,
    pub frames: u64,
    pub boxes: u64,
    pub bytes: u64,
    /// Base64 MD5 of the file, as in a Content-MD5 header.
    pub md5: String,
    #[serde(default)]
    pub salvaged: bool,
}

impl ClipMeta {
    /// Key/value pairs for blob metadata (ASCII only, as HTTP headers require).
    pub fn as_blob_metadata(&self) -> Vec<(&'static str, String)> {
        vec![
            ("camera", self.camera.clone()),
            ("start", self.start.clone()),
            ("seconds", format!("{:.1}", self.seconds)),
            ("frames", self.frames.to_string()),
            ("boxes", self.boxes.to_string()),
            ("salvaged", self.salvaged.to_string()),
        ]
    }
}

/// The sidecar's path for a clip at `clip_path`.
pub fn sidecar_path(clip_path: &Path) -> PathBuf {
    clip_path.with_extension("json")
}

/// MD5 of a file and its length.
pub fn md5_of_file(path: &Path) -> std::io::Result<([u8; 16], u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Md5::new();
    let mut buffer = vec![0_u8; 256 * 1024];
    let mut total = 0_u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    Ok((hasher.finalize().into(), total))
}

pub fn base64_md5(digest: &[u8; 16]) -> String {
    azure_core::base64::encode(digest)
}
