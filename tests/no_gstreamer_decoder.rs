//! The camera reader needs no GStreamer decoder: libavcodec decodes. The container image installs none,
//! and `parsebin`, left to itself, refuses ("missing a plug-in") a stream that no installed decoder
//! takes, or hands out an RTP camera's NAL units instead of access units. A file of its own: taking
//! GStreamer's decoders out of the running is for the whole process.

mod support;

use std::path::Path;
use std::time::Duration;

use dachavideo::camera::CameraStream;
use gstreamer as gst;
use gstreamer::prelude::*;

/// Every video decoder GStreamer has here is left out of autoplugging, as if it were not installed; the
/// names of those that take H.264 or H.265.
fn without_gstreamer_decoders() -> Vec<String> {
    gst::init().unwrap();
    let mut dropped = Vec::new();
    for feature in gst::Registry::get().features(gst::ElementFactory::static_type()) {
        let factory = feature.downcast_ref::<gst::ElementFactory>().unwrap();
        let klass = factory
            .metadata(gst::ELEMENT_METADATA_KLASS)
            .unwrap_or_default();
        if klass.contains("Decoder") && klass.contains("Video") {
            feature.set_rank(gst::Rank::NONE);
            dropped.push(feature.name());
        }
    }
    // Nothing GStreamer would autoplug decodes H.264 now (on a machine without gst-libav there was
    // nothing to leave out).
    let h264 = gst::Caps::builder("video/x-h264").build();
    let decoders = gst::ElementFactory::factories_with_type(
        gst::ElementFactoryType::DECODER,
        gst::Rank::MARGINAL,
    );
    assert!(
        decoders
            .iter()
            .all(|factory| !factory.can_sink_any_caps(&h264)),
        "left out {} decoders, yet one for H.264 remains",
        dropped.len()
    );
    let h265 = gst::Caps::builder("video/x-h265").build();
    dropped
        .iter()
        .filter_map(|name| gst::ElementFactory::find(name))
        .filter(|factory| factory.can_sink_any_caps(&h264) || factory.can_sink_any_caps(&h265))
        .map(|factory| factory.name().to_string())
        .collect()
}

/// The test videos' pictures.
const SOURCE: &str = "testsrc=size=64x48:rate=10";

fn frames_read(path: &Path) -> usize {
    let mut camera = CameraStream::open_file(path).unwrap();
    std::iter::from_fn(|| camera.read().ok()).count()
}

#[test]
fn h264_and_h265_are_read_with_no_gstreamer_decoder_installed() {
    without_gstreamer_decoders();
    let dir = tempfile::tempdir().unwrap();
    let h264 = dir.path().join("h264.mp4");
    support::lavfi_video(
        &h264,
        SOURCE,
        10,
        &["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    );
    assert_eq!(frames_read(&h264), 10);
    let h265 = dir.path().join("h265.mp4");
    support::lavfi_video(
        &h265,
        SOURCE,
        10,
        &[
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=error",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    assert_eq!(frames_read(&h265), 10);
}

/// The service, a process of its own, gets the same through GStreamer's own variable.
#[test]
fn the_service_records_an_rtsp_camera_with_no_gstreamer_decoder_installed() {
    let decoders = without_gstreamer_decoders();
    let camera = support::Camera::start(true);
    let mut env = support::service_env(
        &camera,
        None,
        &[("RECORD_DURATION", "2s"), ("PRE_ROLL", "1s")],
    );
    let ranks: Vec<String> = decoders.iter().map(|name| format!("{name}:0")).collect();
    env.insert("GST_PLUGIN_FEATURE_RANK".into(), ranks.join(","));
    let mut service = support::Service::start(&[], &env);
    service.wait_for("clip recorded", 1, Duration::from_secs(40));
    service.stop_cleanly();
    assert_eq!(service.count("camera unreachable"), 0, "{}", service.log());
}
