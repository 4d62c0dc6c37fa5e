//! How much the spool may hold: `SPOOL_MAX_BYTES` of finished clips, and a floor of free space on its
//! filesystem (`SPOOL_MIN_FREE`). A user wants the newest footage, so past either bound the oldest clips
//! are the ones that go.

use std::io;
use std::path::Path;

/// Bounds for the spool; `u64::MAX` / 0 for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    pub max_bytes: u64,
    pub min_free_bytes: u64,
}

impl SpoolLimits {
    pub const NONE: Self = Self {
        max_bytes: u64::MAX,
        min_free_bytes: 0,
    };
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
// The field types are 32-bit on armv7, which we ship for; u64 elsewhere.
#[allow(clippy::useless_conversion)]
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let stats = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(u64::from(stats.blocks_available()) * u64::from(stats.fragment_size()))
}
