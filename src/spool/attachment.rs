//! Files that travel with a clip: the snapshot (`<stem>.jpg`) and the event record (`<stem>.json` in
//! storage). In the spool they sit beside the clip, committed before it and removed with it.

use std::path::{Path, PathBuf};

/// One kind of file that goes up beside a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// A JPEG of the frame with the most motion, boxes drawn.
    Snapshot,
    /// A JSON record of the event: camera, start, end, boxes over time.
    EventRecord,
}

impl Attachment {
    pub const ALL: [Self; 2] = [Self::Snapshot, Self::EventRecord];

    /// Suffix of its file in the spool (the clip's sidecar already takes `<stem>.json` there).
    fn spool_suffix(self) -> &'static str {
        match self {
            Self::Snapshot => "jpg",
            Self::EventRecord => "event.json",
        }
    }

    /// Suffix of its blob in storage, beside `<stem>.mp4`.
    fn blob_suffix(self) -> &'static str {
        match self {
            Self::Snapshot => "jpg",
            Self::EventRecord => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Snapshot => "image/jpeg",
            Self::EventRecord => "application/json",
        }
    }

    /// Its path in the spool, for the clip at `clip_path`.
    pub fn spool_path(self, clip_path: &Path) -> PathBuf {
        clip_path.with_extension(self.spool_suffix())
    }

    /// Its blob name, for the clip named `clip_blob_name` (`…/<stem>.mp4`).
    pub fn blob_name(self, clip_blob_name: &str) -> String {
        let stem = clip_blob_name
            .rsplit_once('.')
            .map_or(clip_blob_name, |(stem, _)| stem);
        format!("{stem}.{}", self.blob_suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_sit_beside_the_clip_and_never_take_the_sidecars_name() {
        let clip = Path::new("/spool/gate/2026-11-25/20261125T101500Z.mp4");
        assert_eq!(
            Attachment::EventRecord.spool_path(clip),
            Path::new("/spool/gate/2026-11-25/20261125T101500Z.event.json")
        );
        assert_eq!(
            Attachment::Snapshot.blob_name("gate/2026-11-25/20261125T101500Z.mp4"),
            "gate/2026-11-25/20261125T101500Z.jpg"
        );
        assert_eq!(
            Attachment::EventRecord.blob_name("gate/2026-11-25/20261125T101500Z-1.mp4"),
            "gate/2026-11-25/20261125T101500Z-1.json"
        );
    }
}
