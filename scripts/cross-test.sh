#!/usr/bin/env bash
# The Raspberry Pi build, end to end on an x86 machine (default arm64; `scripts/cross-test.sh armhf` for the
# 32-bit armv7 build):
#   1. the binary cross-built in the image of docker/cross.Dockerfile (Debian bookworm with the target's
#      OpenCV; stage debian-rust: Debian's Rust 1.96 with the target's std, as rustup cannot download
#      targets everywhere), offline, with the crates fetched on the host;
#   2. it needs no newer glibc than bookworm's 2.36 and links OpenCV .so.406;
#   3. run under qemu: `--version` and `detect` on a test video print the same as the amd64 build;
#   4. the image, built from the real Dockerfile with qemu binfmt and started under emulation, passes
#      `dachavideo check` against the RTSP test camera and Azurite on the host (127.0.0.1, host network).
# Set-up included. Prints how long each step took. Servers listen on CROSS_TEST_PORTS (18750-18799).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$SECONDS
step() { echo "== [$((SECONDS - T0))s] $*"; }
fail() { echo "cross-test: FAIL: $*" >&2; exit 1; }
TIMES=()
timed() { # timed LABEL COMMAND...: runs COMMAND, records how long it took
  local label=$1 started=$SECONDS
  shift
  "$@"
  TIMES+=("$(printf '%-52s %4d s' "$label" $((SECONDS - started)))")
}

[ "$(id -u)" -eq 0 ] || fail "run as root (podman is rootful here): sudo bash $0 $*"
ARCH=${1:-arm64}
case "$ARCH" in
  arm64) TARGET=aarch64-unknown-linux-gnu PLATFORM=linux/arm64 QEMU=qemu-aarch64-static MACHINE=aarch64 ;;
  armhf) TARGET=armv7-unknown-linux-gnueabihf PLATFORM=linux/arm/v7 QEMU=qemu-arm-static MACHINE=armv7l ;;
  *) fail "unknown architecture $ARCH (arm64, armhf)" ;;
esac
HOST_TRIPLE=x86_64-unknown-linux-gnu
CROSS_IMAGE=localhost/dachavideo-cross:$ARCH-debian-rust
IMAGE=ghcr.io/dachavideo/dachavideo:cross-test-$ARCH
PORTS=${CROSS_TEST_PORTS:-18750-18799}
WORK=$ROOT/target/cross-test-$ARCH
BIN=target/$TARGET/release/dachavideo

step "set-up (packages, base images for amd64 and $ARCH, qemu binfmt)"
timed "set-up" bash -c "bash scripts/setup.sh && bash scripts/make-base-image.sh amd64 $ARCH"
rm -rf "$WORK" && mkdir -p "$WORK"
source scripts/container-fixtures.sh
trap stop_fixtures EXIT

step "cross image (docker/cross.Dockerfile, stage debian-rust, CROSS_DEB_ARCH=$ARCH)"
timed "cross image build" podman build -q --platform linux/amd64 --build-arg CROSS_DEB_ARCH="$ARCH" \
  --target debian-rust -t "$CROSS_IMAGE" -f docker/cross.Dockerfile docker >/dev/null

step "cargo build --release --target $TARGET in the cross image (offline)"
CARGO_HOME_HOST=${CARGO_HOME:-$HOME/.cargo}
timed "cargo fetch (host)" cargo fetch --locked
mkdir -p "$CARGO_HOME_HOST/registry" "$CARGO_HOME_HOST/git"
timed "cargo build --release ($ARCH, in the cross image)" \
  podman run --rm --network none -v "$ROOT:/src" -w /src \
    -v "$CARGO_HOME_HOST/registry:/cargo/registry" -v "$CARGO_HOME_HOST/git:/cargo/git" \
    -e CARGO_HOME=/cargo -e CARGO_TERM_COLOR=never "$CROSS_IMAGE" \
    cargo build --release --locked --offline --target "$TARGET" --bin dachavideo
file "$BIN" 2>/dev/null || true

step "what the binary needs"
needed=$(podman run --rm -v "$ROOT:/src:ro" -w /src "$CROSS_IMAGE" readelf -W -d "$BIN" | grep NEEDED | grep -o '\[.*\]' | tr -d '[]' | tr '\n' ' ')
glibc=$(podman run --rm -v "$ROOT:/src:ro" -w /src "$CROSS_IMAGE" readelf -W --dyn-syms "$BIN" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)
echo "NEEDED: $needed"
echo "newest glibc symbol: $glibc (bookworm has 2.36)"
[ "$(printf '%s\n' "$glibc" GLIBC_2.36 | sort -V | tail -n1)" = GLIBC_2.36 ] || fail "needs $glibc"
for lib in core imgproc video; do
  grep -q "libopencv_$lib.so.406" <<<"$needed" || fail "does not link libopencv_$lib.so.406"
done
# videoio (and imgcodecs, GDAL and 200 more libraries with it) stays out of the service: the image lacks it.
! grep -q "libopencv_videoio" <<<"$needed" || fail "links libopencv_videoio, which the runtime image does not have"
# libavcodec decodes; libavformat and libavfilter (and their library trees) stay out of the image.
! grep -qE "libavformat|libavfilter" <<<"$needed" || fail "links libavformat or libavfilter, which the runtime image does not have"

step "under qemu: --version, and detect on a test video against the amd64 build"
timed "cargo build --release (amd64, host)" cargo build --release --locked --target "$HOST_TRIPLE" --bin dachavideo
arm_version=$(podman run --rm -v "$ROOT:/src:ro" -w /src "$CROSS_IMAGE" "$QEMU" -L / "$BIN" --version)
amd_version=$("target/$HOST_TRIPLE/release/dachavideo" --version)
echo "$TARGET ($QEMU): $arm_version; amd64: $amd_version"
[ "$arm_version" = "$amd_version" ] || fail "--version differs"

step "$ARCH image (Dockerfile, --platform $PLATFORM: apt-get runs under qemu)"
timed "$ARCH image build" podman build -q --format docker --platform "$PLATFORM" -t "$IMAGE" . >/dev/null
echo "image $IMAGE: $(($(podman image inspect --format '{{.Size}}' "$IMAGE") / 1000000)) MB," \
  "architecture $(podman image inspect --format '{{.Architecture}}' "$IMAGE")"
uname_m=$(podman run --rm --no-healthcheck --platform "$PLATFORM" --entrypoint uname "$IMAGE" -m)
[ "$uname_m" = "$MACHINE" ] || fail "the image runs as $uname_m, not $MACHINE"

make_motion_video "$WORK/motion.mp4"
mkdir -p "$WORK/clips-amd64" "$WORK/clips-$ARCH" && chmod 0777 "$WORK/clips-$ARCH"
# Clip names carry the time of the run; compare everything else.
strip_names() { sed 's/"clip":"[^"]*",//'; }
RECORD_DURATION=5s "target/$HOST_TRIPLE/release/dachavideo" detect "$WORK/motion.mp4" --out "$WORK/clips-amd64" \
  2>/dev/null | strip_names > "$WORK/detect-amd64.jsonl"
started=$SECONDS
podman run --rm --no-healthcheck --platform "$PLATFORM" -e RECORD_DURATION=5s -v "$WORK:/work" "$IMAGE" \
  detect /work/motion.mp4 --out "/work/clips-$ARCH" 2>/dev/null | strip_names > "$WORK/detect-$ARCH.jsonl"
TIMES+=("$(printf '%-52s %4d s' "detect, 12 s of 640x360 video ($ARCH, qemu)" $((SECONDS - started)))")
echo "amd64: $(cat "$WORK/detect-amd64.jsonl")"
echo "$ARCH: $(cat "$WORK/detect-$ARCH.jsonl")"
[ -s "$WORK/detect-amd64.jsonl" ] || fail "detect found no clip on amd64"
cmp -s "$WORK/detect-amd64.jsonl" "$WORK/detect-$ARCH.jsonl" || fail "detect differs between amd64 and $ARCH"
arm_clip=$(find "$WORK/clips-$ARCH" -name '*.mp4' | head -n1)
echo "$ARCH clip: $(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=codec_name,width,height,nb_read_frames -of csv=p=0 "$arm_clip")"

step "dachavideo check in the $ARCH image against the host's camera and Azurite"
low=${PORTS%-*}; high=${PORTS#*-}
AZ_PORT=$(free_port "$low" "$high")
start_azurite "$WORK/azurite" "$AZ_PORT"
CAM_PORT=$(free_port "$((AZ_PORT + 1))" "$high")
start_camera "$CAM_PORT" "$WORK/camera.log"
# Emulated FFmpeg probes the stream slowly: allow more than the default 10 s to open it.
write_env_file "$WORK/env" "$CAM_PORT" CAMERA_NAME=cross-test AZ_CONTAINER_NAME=cross-test CAMERA_OPEN_TIMEOUT=60s
started=$SECONDS
code=0
podman run --rm --no-healthcheck --platform "$PLATFORM" --network host --env-file "$WORK/env" "$IMAGE" check \
  > "$WORK/check.log" 2>&1 || code=$?
cat "$WORK/check.log"
TIMES+=("$(printf '%-52s %4d s' "dachavideo check ($ARCH, qemu)" $((SECONDS - started)))")
[ "$code" = 0 ] || fail "dachavideo check exited with $code"
if grep -qF "$CAMERA_PASSWORD" "$WORK/check.log" || grep -qF "$AZURITE_KEY" "$WORK/check.log"; then
  fail "a secret shows in check's output"
fi

step "cross-test: all passed in $((SECONDS - T0)) s"
printf '  %s\n' "${TIMES[@]}"
