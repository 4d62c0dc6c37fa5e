//! dachavideo: a motion-triggered recorder for an RTSP camera that ships annotated clips to Azure Blob
//! Storage. The pipeline, top to bottom:
//!
//! camera (RTSP, GStreamer) → motion (detector) → recorder (clips) → spool (disk) → upload (Azure or a dir)
//!
//! See docs/ARCHITECTURE.md.

pub mod bench;
pub mod camera;
pub mod check;
pub mod config;
pub mod decoding;
pub mod detect;
pub mod gst_pipeline;
pub mod health;
pub mod i420;
pub mod memory;
pub mod metrics;
pub mod motion;
pub mod pipeline;
pub mod recorder;
pub mod shutdown;
pub mod spool;
pub mod stream;
pub mod telemetry;
#[cfg(test)]
mod test_videos;
pub mod upload;
pub mod webhook;
