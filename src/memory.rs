//! The process's memory on a small Pi: glibc's allocator tuned for a service that moves large frames
//! between threads.
//!
//! Frames (0.7 MB at 640x360, 6 MB at 1080p) are allocated by the camera thread and freed by the motion
//! or recorder thread, the pre-roll keeps seconds of them, and each clip starts GStreamer and x264
//! threads. glibc keeps what was freed for reuse, so resident memory drifts up by tens of megabytes over
//! hours of reconnects and clips without a leak (measured: +6 MB over 13 camera cycles, in steps). Two
//! arenas and giving free pages back after each clip keep it at what is really in use.

/// Two malloc arenas, not eight per core: new threads would each get one (measured: 124-138 MB over 90
/// clips, flat at 121-124 MB with two). Call before any other thread exists.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Gives the allocator's free pages back to the system (`malloc_trim`, which also releases whole free
/// pages inside the heap). Takes well under a millisecond; called when a clip closes and when the camera
/// stream ends, the moments after which many frames were just freed.
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}
