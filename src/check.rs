//! `dachavideo check`: tries the configuration, the camera and the storage once and reports each.

use std::time::Instant;

use crate::camera::{CameraStream, CaptureError, diagnose};
use crate::config::ServiceConfig;
use crate::upload::ClipSink;

/// One line of the report.
pub struct CheckLine {
    pub what: &'static str,
    pub outcome: Result<String, String>,
}

/// Opens the camera and reads one frame (blocking, bounded by the camera timeouts).
pub fn check_camera(config: &ServiceConfig) -> CheckLine {
    let started = Instant::now();
    let outcome = CameraStream::open(&config.camera)
        .and_then(|mut stream| {
            stream.read()?;
            Ok(stream.info())
        })
        .map(|info| {
            format!(
                "{}: {}x{} at {:.1} fps, first frame after {:.1} s",
                config.camera.url,
                info.size.width,
                info.size.height,
                info.fps,
                started.elapsed().as_secs_f64()
            )
        })
        .map_err(|e| match e {
            CaptureError::OpenFailed { .. } => {
                match diagnose(&config.camera.url, config.camera.open_timeout) {
                    Some(cause) => format!("{}: {cause}", config.camera.url),
                    None => format!("{}: {e}", config.camera.url),
                }
            }
            other => format!("{}: {other}", config.camera.url),
        });
    CheckLine {
        what: "camera",
        outcome,
    }
}

/// Makes sure the storage is reachable and accepts the credentials.
pub async fn check_storage(sink: &impl ClipSink) -> CheckLine {
    CheckLine {
        what: "storage",
        outcome: sink
            .probe()
            .await
            .map_err(|e| format!("{}: {e}", sink.describe())),
    }
}
