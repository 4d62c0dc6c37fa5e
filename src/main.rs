//! The `dachavideo` command: run the service, check a set-up, or run the detector on a file.
//! Wiring only: exit status 0 on success, 1 on a runtime failure, 2 on bad configuration or usage.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    dachavideo::memory::tune_allocator();
    // Before any thread exists (set_var is not thread-safe): TCP and a short probe for RTSP, unless the
    // user chose other FFmpeg options.
    if std::env::var_os("OPENCV_FFMPEG_CAPTURE_OPTIONS").is_none() {
        // SAFETY: single-threaded at this point; nothing else reads or writes the environment yet.
        unsafe {
            std::env::set_var(
                "OPENCV_FFMPEG_CAPTURE_OPTIONS",
                dachavideo::camera::FFMPEG_CAPTURE_OPTIONS,
            )
        };
    }
    let args = cli::Cli::parse();
    cli::main(args)
}
