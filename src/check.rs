//! `dachavideo check`: tries the configuration, the camera and the storage once and reports each.

use std::time::Instant;

use time::OffsetDateTime;

use crate::camera::{CameraStream, CaptureError, diagnose};
use crate::config::{ContainerSas, ServiceConfig};
use crate::upload::ClipSink;

/// A SAS that expires sooner than this is reported (a warning, not a failure).
const SAS_EXPIRY_WARNING: time::Duration = time::Duration::days(7);

/// One line of the report.
pub struct CheckLine {
    pub what: &'static str,
    pub outcome: Outcome,
}

/// How a check went; only `Fail` makes `check` exit 1.
pub enum Outcome {
    Ok(String),
    Warn(String),
    Fail(String),
}

impl From<Result<String, String>> for Outcome {
    fn from(result: Result<String, String>) -> Self {
        match result {
            Ok(detail) => Self::Ok(detail),
            Err(reason) => Self::Fail(reason),
        }
    }
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
        outcome: outcome.into(),
    }
}

/// Makes sure the storage is reachable and accepts the credentials.
pub async fn check_storage(sink: &impl ClipSink) -> CheckLine {
    CheckLine {
        what: "storage",
        outcome: sink
            .probe()
            .await
            .map_err(|e| format!("{}: {e}", sink.describe()))
            .into(),
    }
}

/// What a container SAS grants (`sp`) and until when (`se`), judged at `now`: expired fails; expiring within
/// a week, granting more than create and write, or lacking write warns.
pub fn check_sas(sas: &ContainerSas, now: OffsetDateTime) -> CheckLine {
    let grants = match (&sas.permissions, sas.permission_names()) {
        (Some(letters), Some(names)) => format!("grants {names} (sp={letters})"),
        _ => "grants what its stored access policy says (no sp= in the URL)".to_string(),
    };
    let expiry = sas.expiry.map(|expiry| (expiry, expiry - now));
    let until = match expiry {
        Some((expiry, left)) if left.is_positive() => {
            format!("expires {} (in {})", day_and_time(expiry), human(left))
        }
        Some((expiry, _)) => format!("expired {}", day_and_time(expiry)),
        None => "no expiry in the URL (se=)".to_string(),
    };
    let detail = format!("{grants}; {until}");
    let mut warnings = Vec::new();
    if sas.lacks_write() {
        warnings.push(
            "uploads need w (write) and c (create): make it with --permissions cw".to_string(),
        );
    }
    let excess = sas.excess_permissions();
    if !excess.is_empty() {
        warnings.push(format!(
            "it also grants {}: whoever takes the device could read or delete footage; cw is enough",
            crate::config::sas_permission_names(&excess)
        ));
    }
    let outcome = match expiry {
        Some((_, left)) if !left.is_positive() => Outcome::Fail(format!(
            "{detail}: uploads are refused; make a new SAS and put it in AZ_CONTAINER_SAS_URL"
        )),
        Some((_, left)) if left < SAS_EXPIRY_WARNING => {
            warnings.insert(0, "make a new one before it runs out".into());
            Outcome::Warn(format!("{detail}: {}", warnings.join("; ")))
        }
        _ if !warnings.is_empty() => Outcome::Warn(format!("{detail}: {}", warnings.join("; "))),
        _ => Outcome::Ok(detail),
    };
    CheckLine {
        what: "sas",
        outcome,
    }
}

fn day_and_time(time: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time.format(format).unwrap_or_default()
}

/// A span for a person: days when there are some, else hours, else minutes.
pub fn human(span: time::Duration) -> String {
    match (span.whole_days(), span.whole_hours(), span.whole_minutes()) {
        (days @ 1.., _, _) => format!("{days} day{}", if days == 1 { "" } else { "s" }),
        (_, hours @ 1.., _) => format!("{hours} h"),
        (_, _, minutes) => format!("{minutes} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sas(query: &str) -> ContainerSas {
        ContainerSas::parse(&format!(
            "https://acct.blob.core.windows.net/clips?{query}&sig=U0lH"
        ))
        .unwrap()
    }

    fn judged(query: &str) -> (&'static str, String) {
        let now = time::macros::datetime!(2030-01-01 00:00 UTC);
        match check_sas(&sas(query), now).outcome {
            Outcome::Ok(text) => ("ok", text),
            Outcome::Warn(text) => ("warn", text),
            Outcome::Fail(text) => ("fail", text),
        }
    }

    #[test]
    fn a_sas_is_judged_by_its_permissions_and_expiry() {
        let (verdict, text) = judged("sp=cw&se=2031-01-01");
        assert_eq!(verdict, "ok", "{text}");
        assert!(text.contains("grants create, write (sp=cw)"), "{text}");
        assert!(
            text.contains("expires 2031-01-01 00:00 UTC (in 365 days)"),
            "{text}"
        );

        let (verdict, text) = judged("sp=cw&se=2030-01-04T12:00:00Z");
        assert_eq!(verdict, "warn", "{text}");
        assert!(
            text.contains("in 3 days") && text.contains("make a new one"),
            "{text}"
        );

        let (verdict, text) = judged("sp=cw&se=2029-12-31T23:00:00Z");
        assert_eq!(verdict, "fail", "{text}");
        assert!(text.contains("expired 2029-12-31 23:00 UTC"), "{text}");

        let (verdict, text) = judged("sp=racwdl&se=2031-01-01");
        assert_eq!(verdict, "warn", "{text}");
        assert!(
            text.contains("also grants read, add, delete, list:")
                && text.contains("read or delete"),
            "{text}"
        );

        let (verdict, text) = judged("sp=c&se=2031-01-01");
        assert_eq!(verdict, "warn", "{text}");
        assert!(text.contains("uploads need w"), "{text}");

        let (verdict, text) = judged("si=policy");
        assert_eq!(verdict, "ok", "{text}");
        assert!(
            text.contains("stored access policy") && text.contains("no expiry"),
            "{text}"
        );
    }
}
