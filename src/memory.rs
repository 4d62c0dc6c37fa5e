//! The process's memory on a small Pi: glibc's allocator tuned for a service that moves large frames
//! between threads.
//!
//! Frames (0.35 MB at 640x360, 3.1 MB at 1080p) are allocated by the camera thread and freed by the
//! motion or recorder thread, a clip's pre-roll is decoded again in a burst, and each clip starts
//! GStreamer and x264 threads. glibc keeps what was freed for reuse, so resident memory drifts up by tens of megabytes over
//! hours of reconnects and clips without a leak (measured: +6 MB over 13 camera cycles, in steps). Two
//! arenas and giving free pages back after each clip keep it at what is really in use. On 32-bit glibc
//! frames are kept in the heap instead of being mapped afresh each time (see `tune_allocator`).

/// Two malloc arenas, not eight per core: new threads would each get one (measured: 124-138 MB over 90
/// clips, flat at 121-124 MB with two). Call before any other thread exists.
///
/// On 32-bit glibc (armv7, 32-bit Pi OS) also keeps large blocks in the heap. There the mmap threshold
/// cannot rise above 512 KiB, so every decoded frame (1.4 MB at 720p, 3.1 MB at 1080p) and every buffer
/// handed to the encoder is a fresh `mmap` and `munmap` with a page fault per 4 KiB page: measured with that
/// threshold on x86-64, recording 1080p30 took 565 000 page faults instead of 26 000 for 180 frames and 1.4
/// instead of 0.2 s of system time. Without mmap for blocks (`M_MMAP_MAX` 0) and with one arena (a second
/// arena's heaps are at most 1 MiB there, too small for a frame, and glibc would map the frame after all)
/// frames are reused from the heap; `return_free_memory` after each clip gives the pages back, so free()
/// itself need not (a high `M_TRIM_THRESHOLD`). 64-bit glibc raises its threshold by itself.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "32"))]
    // SAFETY: as above.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Gives the allocator's free pages back to the system (`malloc_trim`, which also releases whole free
/// pages inside the heap). Takes well under a millisecond; called when a clip closes, when its pre-roll
/// has been written and when the camera stream ends, the moments after which many frames were just freed.
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}
