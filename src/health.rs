//! Liveness for `dachavideo health` (the container's HEALTHCHECK): the service writes a small status file
//! into the spool every few seconds; `health` reads it and judges.
//!
//! Unhealthy when the status file is missing or stale (the service is not running) or when no camera
//! frame arrived for `HEALTH_MAX_FRAME_AGE` (after the same time of grace at start).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const STATUS_FILE: &str = ".health.json";
/// How often the service writes its status.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// A status older than this means the service is not running.
const STALE_AFTER: Duration = Duration::from_secs(30);

/// The time of the last camera frame, shared by the camera stage (writer) and the status task (reader).
#[derive(Clone, Default)]
pub struct FrameWatch(Arc<AtomicU64>);

impl FrameWatch {
    pub fn frame_arrived(&self) {
        self.0
            .store(unix_millis(SystemTime::now()), Ordering::Relaxed);
    }

    /// Unix milliseconds of the last frame, if any.
    pub fn last_frame(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }
}

/// What the service writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub pid: u32,
    pub started_ms: u64,
    pub updated_ms: u64,
    pub last_frame_ms: Option<u64>,
}

pub fn status_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join(STATUS_FILE)
}

/// Writes the status atomically (temporary file, then rename).
pub fn write_status(spool_dir: &Path, status: &Status) -> std::io::Result<()> {
    let path = status_path(spool_dir);
    let partial = path.with_extension("json.part");
    std::fs::write(&partial, serde_json::to_vec(status)?)?;
    std::fs::rename(partial, path)
}

/// Reads the status and judges it at `now`: `Ok(summary)` when healthy, `Err(reason)` when not.
pub fn assess(
    spool_dir: &Path,
    now: SystemTime,
    max_frame_age: Duration,
) -> Result<String, String> {
    let path = status_path(spool_dir);
    let bytes = std::fs::read(&path).map_err(|_| {
        format!(
            "the service is not running (no status at {})",
            path.display()
        )
    })?;
    let status: Status = serde_json::from_slice(&bytes)
        .map_err(|e| format!("unreadable status at {}: {e}", path.display()))?;
    judge(&status, unix_millis(now), max_frame_age)
}

/// Judges the running service from the inside (for `/healthz`): the same rules as the status file.
pub fn judge_live(
    frames_seen: &FrameWatch,
    started_ms: u64,
    now: SystemTime,
    max_frame_age: Duration,
) -> Result<String, String> {
    let now_ms = unix_millis(now);
    let status = Status {
        pid: std::process::id(),
        started_ms,
        updated_ms: now_ms,
        last_frame_ms: frames_seen.last_frame(),
    };
    judge(&status, now_ms, max_frame_age)
}

fn judge(status: &Status, now_ms: u64, max_frame_age: Duration) -> Result<String, String> {
    let age = |ms: u64| Duration::from_millis(now_ms.saturating_sub(ms));
    let seconds = |d: Duration| format!("{:.0} s", d.as_secs_f64());
    let updated = age(status.updated_ms);
    if updated > STALE_AFTER {
        return Err(format!(
            "the service is not running (status last written {} ago)",
            seconds(updated)
        ));
    }
    match status.last_frame_ms.map(age) {
        Some(frame) if frame <= max_frame_age => Ok(format!(
            "last camera frame {:.1} s ago",
            frame.as_secs_f64()
        )),
        Some(frame) => Err(format!("no frame from the camera for {}", seconds(frame))),
        None if age(status.started_ms) <= max_frame_age => {
            Ok("starting: no camera frame yet".into())
        }
        None => Err(format!(
            "no frame from the camera since the start {} ago",
            seconds(age(status.started_ms))
        )),
    }
}

pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(60);

    fn status(started: u64, updated: u64, frame: Option<u64>) -> Status {
        Status {
            pid: 1,
            started_ms: started * 1000,
            updated_ms: updated * 1000,
            last_frame_ms: frame.map(|f| f * 1000),
        }
    }

    #[test]
    fn recent_frames_are_healthy_and_old_ones_are_not() {
        let now = 10_000 * 1000;
        assert!(judge(&status(9_000, 9_999, Some(9_990)), now, MAX).is_ok());
        let reason = judge(&status(9_000, 9_999, Some(9_900)), now, MAX).unwrap_err();
        assert!(
            reason.contains("no frame from the camera for 100 s"),
            "{reason}"
        );
    }

    #[test]
    fn a_start_gets_grace_until_the_first_frame() {
        let now = 10_000 * 1000;
        assert!(judge(&status(9_990, 9_999, None), now, MAX).is_ok());
        assert!(
            judge(&status(9_900, 9_999, None), now, MAX)
                .unwrap_err()
                .contains("since the start")
        );
    }

    #[test]
    fn a_stale_or_missing_status_means_not_running() {
        let now = 10_000 * 1000;
        assert!(
            judge(&status(9_000, 9_900, Some(9_900)), now, MAX)
                .unwrap_err()
                .contains("not running")
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(
            assess(dir.path(), SystemTime::now(), MAX)
                .unwrap_err()
                .contains("not running")
        );
        let written = status(0, unix_millis(SystemTime::now()) / 1000, None);
        let written = Status {
            started_ms: written.updated_ms,
            ..written
        };
        write_status(dir.path(), &written).unwrap();
        assert!(assess(dir.path(), SystemTime::now(), MAX).is_ok());
    }
}
