//! Clip names: `<camera>/<YYYY-MM-DD>/<YYYYMMDDTHHMMSSZ>.mp4`, in UTC, sortable by time.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use time::OffsetDateTime;
use time::macros::format_description;

/// The name of one clip; the same string is its blob name and its path below the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipName {
    camera: String,
    day: String,
    stem: String,
}

impl ClipName {
    /// A clip of `camera` that started at `start`; `duplicate` > 0 adds `-N` for a second clip in the
    /// same second.
    pub fn new(camera: &str, start: SystemTime, duplicate: u32) -> Self {
        let utc = OffsetDateTime::from(start);
        let day = utc
            .format(format_description!("[year]-[month]-[day]"))
            .unwrap_or_else(|_| "0000-00-00".into());
        let mut stem = utc
            .format(format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_else(|_| "00000000T000000Z".into());
        if duplicate > 0 {
            stem.push_str(&format!("-{duplicate}"));
        }
        Self {
            camera: camera.to_string(),
            day,
            stem,
        }
    }

    /// Parses `<camera>/<day>/<stem>.mp4` back, for recordings found on disk.
    pub fn from_relative_path(path: &Path) -> Option<Self> {
        let parts: Vec<&str> = path.iter().map(|p| p.to_str()).collect::<Option<_>>()?;
        let [camera, day, file] = parts.as_slice() else {
            return None;
        };
        let stem = file.strip_suffix(".mp4")?;
        Some(Self {
            camera: (*camera).to_string(),
            day: (*day).to_string(),
            stem: stem.to_string(),
        })
    }

    pub fn camera(&self) -> Option<&str> {
        Some(self.camera.as_str()).filter(|c| !c.is_empty())
    }

    /// The start time the name carries, as RFC 3339 UTC (`2026-11-18T11:06:40Z`).
    pub fn start_rfc3339(&self) -> String {
        let stamp = self.stem.get(..16).unwrap_or_default();
        time::PrimitiveDateTime::parse(
            stamp,
            format_description!("[year][month][day]T[hour][minute][second]Z"),
        )
        .ok()
        .and_then(|t| {
            t.assume_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
    }

    pub fn blob_name(&self) -> String {
        format!("{}/{}/{}.mp4", self.camera, self.day, self.stem)
    }

    pub fn relative_path(&self) -> PathBuf {
        [&self.camera, &self.day, &format!("{}.mp4", self.stem)]
            .iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_are_utc_and_round_trip() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let name = ClipName::new("gate", start, 0);
        assert_eq!(name.blob_name(), "gate/2026-11-18/20261118T110640Z.mp4");
        assert_eq!(
            ClipName::from_relative_path(&name.relative_path()),
            Some(name.clone())
        );
        assert_eq!(name.start_rfc3339(), "2026-11-18T11:06:40Z");
        assert_eq!(
            ClipName::new("gate", start, 2).blob_name(),
            "gate/2026-11-18/20261118T110640Z-2.mp4"
        );
    }
}
