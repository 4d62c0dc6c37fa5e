# dachavideo runtime image: Debian bookworm-slim, the OpenCV 4.6 and GStreamer runtime libraries the binary
# needs, and the binary itself, built beforehand for the image's platform (docs/CONTAINERS.md):
#
#   linux/amd64   target/x86_64-unknown-linux-gnu/release/dachavideo
#   linux/arm64   target/aarch64-unknown-linux-gnu/release/dachavideo
#   linux/arm/v7  target/armv7-unknown-linux-gnueabihf/release/dachavideo
#
# The binaries must be built against bookworm (glibc 2.36, OpenCV .so.406): Cross.toml's images or a bookworm
# machine. The build context holds nothing else (.dockerignore).
ARG DEBIAN_IMAGE=debian:bookworm-slim

# Picks the binary for the target platform. Runs on the build machine's platform: no emulation needed.
FROM --platform=$BUILDPLATFORM ${DEBIAN_IMAGE} AS binary
ARG TARGETARCH
ARG TARGETVARIANT
COPY . /context/
RUN case "${TARGETARCH}/${TARGETVARIANT}" in \
      amd64/*) triple=x86_64-unknown-linux-gnu ;; \
      arm64/*) triple=aarch64-unknown-linux-gnu ;; \
      arm/v7) triple=armv7-unknown-linux-gnueabihf ;; \
      *) echo "no dachavideo build for ${TARGETARCH}/${TARGETVARIANT}" >&2; exit 1 ;; \
    esac \
 && if ! [ -x "/context/target/$triple/release/dachavideo" ]; then \
      echo "target/$triple/release/dachavideo is missing: build it first (docs/CONTAINERS.md)" >&2; exit 1; \
    fi \
 && install -D -m 0755 "/context/target/$triple/release/dachavideo" /out/dachavideo

FROM ${DEBIAN_IMAGE}
# Runtime libraries, and nothing the binary never loads (the image was 792 MB with the plain packages):
# - OpenCV: the three libraries the binary links (objdump -p: NEEDED; video brings dnn, calib3d and
#   features2d; videoio and imgcodecs, with GDAL and the rest, are not linked any more). Their core
#   links libGLX (OpenGL interop), whose package depends on Mesa's GPU drivers and LLVM (160 MB) that a headless
#   service never loads: an empty package providing libglx-mesa0 stands in for them.
# - libavcodec, the camera's H.264/H.265 decoder (not gst-libav, which would bring libavformat, libavfilter
#   and their library trees).
# - GStreamer, for the camera rtspsrc ! parsebin ! appsink and the clip writer appsrc ! x264enc ! h264parse
#   ! mp4mux ! filesink: -base (parsebin, appsrc, appsink) and -ugly (x264enc) as packages; rtspsrc
#   with its RTP plugins, mp4mux and h264parse are plugins out of -good and -bad, whose other plugins pull
#   GTK, Qt and more (175 MB), so only those files (and h264parse's codec parser library) are taken from the
#   same packages, at the same versions.
# Versions are not pinned: every image build takes bookworm's current (security) updates.
# hadolint ignore=DL3003,DL3008
RUN set -eu \
 && mkdir -p /tmp/headless/DEBIAN /tmp/debs \
 && printf '%s\n' 'Package: dachavideo-headless' 'Version: 1.0' 'Architecture: all' 'Maintainer: dachavideo' \
      'Provides: libglx-mesa0' 'Description: no Mesa GL drivers: dachavideo never draws on a display' \
      > /tmp/headless/DEBIAN/control \
 && dpkg-deb --build /tmp/headless /tmp/headless.deb >/dev/null \
 && dpkg -i /tmp/headless.deb \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      libopencv-core406 libopencv-imgproc406 libopencv-video406 \
      libavcodec59 gstreamer1.0-plugins-base gstreamer1.0-plugins-ugly \
 && chown _apt /tmp/debs && cd /tmp/debs \
 && apt-get download gstreamer1.0-plugins-good gstreamer1.0-plugins-bad libgstreamer-plugins-bad1.0-0 \
 && for deb in ./*.deb; do dpkg-deb -x "$deb" /tmp/debs/root; done \
 && plugins=$(dirname /usr/lib/*/gstreamer-1.0/libgstapp.so) && libs=$(dirname "$plugins") \
 && for plugin in isomp4 videoparsersbad rtsp rtpmanager rtp udp; do \
      cp "/tmp/debs/root$plugins/libgst$plugin.so" "$plugins/"; \
    done \
 && cp -P "/tmp/debs/root$libs"/libgstcodecparsers-1.0.so.0* "$libs/" \
 && ldconfig \
 && rm -rf /tmp/headless /tmp/headless.deb /tmp/debs /var/lib/apt/lists/* /var/cache/debconf/*-old \
      /var/log/apt /var/log/dpkg.log

# A system user with a fixed uid (10001: no clash with users of the host, for bind mounts); its home holds
# GStreamer's plugin cache, the spool holds clips waiting for upload.
RUN groupadd --gid 10001 dachavideo \
 && useradd --no-log-init --uid 10001 --gid dachavideo --no-create-home --home-dir /var/lib/dachavideo \
      --shell /usr/sbin/nologin dachavideo \
 && install -d -o dachavideo -g dachavideo -m 0750 /var/lib/dachavideo /var/lib/dachavideo/spool /var/lib/dachavideo/clips

COPY --from=binary /out/dachavideo /usr/local/bin/dachavideo

ENV SPOOL_DIR=/var/lib/dachavideo/spool \
    CLIPS_DIR=/var/lib/dachavideo/clips
VOLUME ["/var/lib/dachavideo/spool"]
WORKDIR /var/lib/dachavideo
USER 10001:10001

# SIGTERM closes the open clip and uploads what it can within SHUTDOWN_GRACE (20 s): give the container
# more than that before it is killed (compose.yaml: stop_grace_period; docker stop -t 30).
STOPSIGNAL SIGTERM
# Healthy while the service runs and camera frames keep arriving (HEALTH_MAX_FRAME_AGE, 60 s by default).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["dachavideo", "health"]
ENTRYPOINT ["dachavideo"]
CMD ["run"]

ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="dachavideo" \
      org.opencontainers.image.description="Motion-triggered RTSP camera recorder that ships annotated clips to Azure Blob Storage" \
      org.opencontainers.image.source="https://github.com/dachavideo/dachavideo" \
      org.opencontainers.image.url="https://github.com/dachavideo/dachavideo" \
      org.opencontainers.image.documentation="https://github.com/dachavideo/dachavideo#readme" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
