//! Test videos for unit tests, made by ffmpeg from one of its lavfi sources (scripts/setup.sh installs
//! ffmpeg).

use std::path::Path;

/// `frames` frames of the lavfi `source` (a filter graph: the pictures), encoded with `codec` (ffmpeg's
/// arguments) into `path`, whose extension picks the container.
pub fn lavfi_video(path: &Path, source: &str, frames: u64, codec: &[&str]) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", source])
        .args(["-frames:v", &frames.to_string()])
        .args(codec)
        .arg(path)
        .status()
        .expect("ffmpeg (scripts/setup.sh installs it)");
    assert!(status.success(), "ffmpeg could not make {}", path.display());
}
