//! What the recorder tells the rest of the service about its clips (metrics, the webhook) without knowing
//! who listens: an optional observer, called on the recorder's thread when a clip starts and when one is
//! committed to the spool. An observer must return at once (count, or hand over to a channel).

use std::time::SystemTime;

use super::{ClipReady, Recorder};

/// A clip began recording, or was closed and committed to the spool.
#[derive(Debug, Clone, Copy)]
pub enum ClipEvent<'a> {
    Started {
        blob_name: &'a str,
        camera: &'a str,
        /// Wall time (UTC) of the clip's first frame.
        wall: SystemTime,
    },
    Recorded(&'a ClipReady),
}

/// Called with every [`ClipEvent`]; see the module documentation.
pub type ClipObserver = Box<dyn Fn(ClipEvent<'_>) + Send>;

impl Recorder {
    /// Tells `observer` about every clip from now on.
    pub fn observe(&mut self, observer: ClipObserver) {
        self.observer = Some(observer);
    }

    pub(super) fn notify(&self, event: ClipEvent<'_>) {
        if let Some(observer) = &self.observer {
            observer(event);
        }
    }
}
