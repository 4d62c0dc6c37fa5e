# Build image for the Raspberry Pi targets, used by `cross` (Cross.toml) and by scripts/cross-test.sh.
#
# Debian bookworm with the build machine's clang (the opencv crate's binding generator), Debian's cross gcc
# and the target's OpenCV from Debian's multiarch archive, so that a binary needs exactly what the bookworm
# runtime image has: glibc <= 2.36 and libopencv_*.so.406. (cross's stock images are Ubuntu: OpenCV 4.2 with
# soname .so.4.2, or glibc 2.39.)
#
#   CROSS_DEB_ARCH   arm64 (aarch64-unknown-linux-gnu) or armhf (armv7-unknown-linux-gnueabihf); cross
#                    passes it on its own.
# Stages: `cross` (the last, what cross builds; cross mounts its Rust toolchain into it) and `debian-rust`
# (adds Debian's own Rust 1.96 with the target's std, for machines where rustup cannot download a target).
ARG DEBIAN_IMAGE=debian:bookworm

FROM ${DEBIAN_IMAGE} AS toolchain
ARG CROSS_DEB_ARCH=arm64
# hadolint ignore=DL3008
RUN case "${CROSS_DEB_ARCH}" in \
      arm64) gnu=aarch64-linux-gnu ;; \
      armhf) gnu=arm-linux-gnueabihf ;; \
      *) echo "unsupported CROSS_DEB_ARCH=${CROSS_DEB_ARCH} (arm64, armhf)" >&2; exit 1 ;; \
    esac \
 && dpkg --add-architecture "${CROSS_DEB_ARCH}" \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates git pkg-config clang libclang-dev qemu-user-static \
      "gcc-${gnu}" "g++-${gnu}" "libc6-dev-${CROSS_DEB_ARCH}-cross" "libopencv-dev:${CROSS_DEB_ARCH}" \
      "libavcodec-dev:${CROSS_DEB_ARCH}" "libavformat-dev:${CROSS_DEB_ARCH}" \
      "libgstreamer1.0-dev:${CROSS_DEB_ARCH}" "libgstreamer-plugins-base1.0-dev:${CROSS_DEB_ARCH}" \
 && rm -rf /var/lib/apt/lists/*

# Both targets' settings: each image uses those of its own target. pkg-config reads the _<target> variant of
# PKG_CONFIG_LIBDIR, so the target's OpenCV is found (and never the build machine's). The runner lets
# `cross test` / `cargo run` execute the binaries under qemu.
ENV PKG_CONFIG_ALLOW_CROSS=1 \
    PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++ \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /" \
    PKG_CONFIG_LIBDIR_armv7_unknown_linux_gnueabihf=/usr/lib/arm-linux-gnueabihf/pkgconfig:/usr/share/pkgconfig \
    CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc \
    CXX_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-g++ \
    AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar \
    CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc \
    CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm-static -L /"

FROM toolchain AS debian-rust
ARG CROSS_DEB_ARCH=arm64
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends rustc-web cargo-web "libstd-rust-web-dev:${CROSS_DEB_ARCH}" \
 && rm -rf /var/lib/apt/lists/*

FROM toolchain AS cross
