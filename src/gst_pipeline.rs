//! The GStreamer plumbing the camera reader and the clip writer share: a pipeline built from its
//! description, its elements by name, and the first error it reported. Errors are GStreamer's words;
//! each caller puts them into its own error type.

use gstreamer as gst;
use gstreamer::prelude::*;

/// Initialises GStreamer (once per process; later calls are free) and builds the pipeline.
pub fn launch(description: &str) -> Result<gst::Pipeline, String> {
    gst::init().map_err(|e| e.to_string())?;
    gst::parse::launch(description)
        .map_err(|e| e.to_string())?
        .dynamic_cast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())
}

/// The element named `name` in the description.
pub fn element(pipeline: &gst::Pipeline, name: &str) -> Result<gst::Element, String> {
    pipeline
        .by_name(name)
        .ok_or_else(|| format!("no element {name}"))
}

/// The element named `name`, as the kind of element it must be (an `AppSrc`, an `AppSink`).
pub fn element_as<T: IsA<gst::Element>>(pipeline: &gst::Pipeline, name: &str) -> Result<T, String> {
    element(pipeline, name)?
        .dynamic_cast::<T>()
        .map_err(|_| format!("{name} is not a {}", T::static_type().name()))
}

/// The pipeline's first error, if it reported one (taken off the bus), with the reason a stream stopped
/// when GStreamer gives one (its message alone is "Internal data stream error.").
pub fn first_error(pipeline: &gst::Pipeline) -> Option<String> {
    let message = pipeline.bus()?.pop_filtered(&[gst::MessageType::Error])?;
    let gst::MessageView::Error(error) = message.view() else {
        return None;
    };
    let text = error.error().message().to_string();
    let reason = error.debug().and_then(|debug| {
        Some(
            debug
                .split("reason ")
                .nth(1)?
                .split(' ')
                .next()?
                .to_string(),
        )
    });
    Some(match reason {
        Some(reason) => format!("{text} ({reason})"),
        None => text,
    })
}
