//! The `dachavideo` command: run the service, check a set-up, or run the detector on a file.
//! Wiring only: exit status 0 on success, 1 on a runtime failure, 2 on bad configuration or usage.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    limit_malloc_arenas();
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

/// Every clip starts GStreamer and x264 threads, and glibc gives new threads new malloc arenas: resident
/// memory then wanders 10-30 MB above its need (measured: 124-138 MB over 90 clips, flat at 121-124 MB with
/// two arenas). Two arenas are plenty for this workload.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
