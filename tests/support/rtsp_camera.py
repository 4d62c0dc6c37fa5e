#!/usr/bin/python3
"""Fake RTSP camera for dachavideo's integration tests.

Serves an H.264 stream on rtsp://127.0.0.1:PORT/PATH using GStreamer's RTSP
server (python3-gi; run it with /usr/bin/python3).

Live scene (default): static, dimmed colour bars with a white square box
(height/4 on a side) that glides back and forth horizontally, crossing the
frame in about 3 s. With motion off the box stands still and the picture is
pixel-stable (no noise, no clock overlay), so a motion detector sees nothing.
All clients share the same scene.

How tests use it:
  * spawn `/usr/bin/python3 tests/support/rtsp_camera.py --port PORT [...]`,
    wait for the single stdout line `READY rtsp://127.0.0.1:PORT/PATH`
    (never includes credentials, even with --user/--password);
  * `kill -USR1 PID` turns motion on, `kill -USR2 PID` turns it off;
  * SIGTERM / SIGINT stop the server, exit status 0;
  * exit status 3 (one line on stderr) if the port is already taken;
  * `--file VIDEO.mp4` serves an H.264 mp4 instead of the live scene
    (each client gets its own playback from the start);
  * `--user U --password PW` requires RTSP basic auth.
"""

import argparse
import os
import signal
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

CROSSING_SECONDS = 3.0


def parse_args():
    p = argparse.ArgumentParser(description="Test RTSP camera server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/stream")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--motion", choices=["on", "off"], default="on")
    p.add_argument("--file", help="serve this H.264 mp4 instead of the live scene")
    args = p.parse_args()
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    if args.file and not os.path.isfile(args.file):
        p.error(f"no such file: {args.file}")
    if not args.path.startswith("/"):
        args.path = "/" + args.path
    return args


def live_launch(w, h, fps, box):
    caps = f"video/x-raw,width={w},height={h},framerate={fps}/1"
    box_caps = f"video/x-raw,width={box},height={box},framerate={fps}/1"
    # Background pad at alpha 0.5 over black: textured but dark, so the white
    # box contrasts with every bar (also in grayscale). pattern=smpte100, not
    # smpte: the latter has a patch of animated noise in its bottom corner.
    return (
        f"( compositor name=mix background=black sink_0::alpha=0.5 "
        f"sink_1::xpos=0 sink_1::ypos={(h - box) // 2} "
        f"! {caps} ! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 "
        f"videotestsrc is-live=true pattern=smpte100 ! {caps} ! mix.sink_0 "
        f"videotestsrc is-live=true pattern=white ! {box_caps} ! mix.sink_1 )"
    )


def file_launch(path):
    location = path.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'( filesrc location="{location}" ! qtdemux ! h264parse '
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


class MovingBox:
    """Box position, advanced from a GLib timeout while motion is on."""

    def __init__(self, width, box, motion):
        self.max_x = max(width - box, 1)
        self.speed = width / CROSSING_SECONDS  # px per second
        self.motion = motion
        self.x = 0.0
        self.direction = 1
        self.last = time.monotonic()
        self.pads = []  # compositor sink pads of the live media (normally one)

    def media_configure(self, _factory, media):
        pad = media.get_element().get_by_name("mix").get_static_pad("sink_1")
        pad.set_property("xpos", int(self.x))
        self.pads.append(pad)
        media.connect("unprepared", lambda _m: self.pads.remove(pad))

    def tick(self):
        now = time.monotonic()
        if self.motion:
            self.x += self.direction * self.speed * (now - self.last)
            if self.x >= self.max_x:
                self.x, self.direction = 2 * self.max_x - self.x, -1
            elif self.x <= 0:
                self.x, self.direction = -self.x, 1
            self.x = min(max(self.x, 0.0), float(self.max_x))
            for pad in self.pads:
                pad.set_property("xpos", int(self.x))
        self.last = now
        return GLib.SOURCE_CONTINUE

    def set_motion(self, on):
        self.motion = on
        return GLib.SOURCE_CONTINUE


def main():
    args = parse_args()
    Gst.init(None)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    mover = None
    if args.file:
        factory.set_launch(file_launch(args.file))
    else:
        box = max(args.height // 4, 2)
        factory.set_launch(live_launch(args.width, args.height, args.fps, box))
        factory.set_shared(True)
        mover = MovingBox(args.width, box, args.motion == "on")
        factory.connect("media-configure", mover.media_configure)

    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", args.user)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        role = Gst.Structure.new_empty(args.user)
        role.set_value("media.factory.access", True)
        role.set_value("media.factory.construct", True)
        factory.add_role_from_structure(role)

    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"rtsp_camera: cannot listen on 127.0.0.1:{args.port} (port in use?)",
              file=sys.stderr, flush=True)
        sys.exit(3)

    loop = GLib.MainLoop()
    if mover is not None:
        GLib.timeout_add(max(1000 // args.fps, 10), mover.tick)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, mover.set_motion, True)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR2, mover.set_motion, False)
    else:  # keep the default SIGUSR actions (terminate) from killing a file server
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda: GLib.SOURCE_CONTINUE)
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)

    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()

    # Drop the clients so their media pipelines shut down before we exit.
    server.client_filter(lambda _s, _c: GstRtspServer.RTSPFilterResult.REMOVE)
    sys.exit(0)


if __name__ == "__main__":
    main()
