#!/usr/bin/env bash
# The main job, end to end on this machine: starts the RTSP test camera (a moving box) and Azurite on
# 127.0.0.1, runs the service until a clip has been uploaded, prints where it is, and stops everything.
# Set-up included (apt packages, Azurite); a release build on first run takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked
BIN=${CARGO_TARGET_DIR:-target}/release/dachavideo

DEMO=.demo
rm -rf "$DEMO" && mkdir -p "$DEMO/azurite"
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
AZ_PORT=$(free_port)
CAM_PORT=$(free_port)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1  # Azurite sometimes ignores the first SIGTERM
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

.tools/node_modules/.bin/azurite-blob --blobHost 127.0.0.1 --blobPort "$AZ_PORT" --location "$DEMO/azurite" \
  --skipApiVersionCheck --loose --silent > "$DEMO/azurite.log" 2>&1 &
pids+=($!)
/usr/bin/python3 tests/support/rtsp_camera.py --port "$CAM_PORT" --user demo --password demo-secret \
  --width 1280 --height 720 > "$DEMO/camera.log" 2>&1 &
pids+=($!)
wait_for_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
wait_for_port "$AZ_PORT" || { echo "demo: Azurite did not start"; cat "$DEMO/azurite.log"; exit 1; }
for _ in $(seq 100); do grep -q READY "$DEMO/camera.log" && break; sleep 0.1; done
grep -q READY "$DEMO/camera.log" || { echo "demo: the test camera did not start"; cat "$DEMO/camera.log"; exit 1; }

KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
export RTSP_URL="rtsp://demo:demo-secret@127.0.0.1:$CAM_PORT/stream"
export CAMERA_NAME=demo-cam
export AZ_STORAGE_CONNSTRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$KEY;BlobEndpoint=http://127.0.0.1:$AZ_PORT/devstoreaccount1;"
export AZ_CONTAINER_NAME=dacha-demo
export RECORD_DURATION="${RECORD_DURATION:-10s}"
export SPOOL_DIR="$DEMO/spool"

echo "== dachavideo check"
"$BIN" check
echo "== dachavideo (until the first clip is uploaded)"
: > "$DEMO/service.log"
"$BIN" >> "$DEMO/service.log" 2>&1 &
SERVICE=$!
pids+=("$SERVICE")
tail -n +1 -f "$DEMO/service.log" --pid "$SERVICE" &
pids+=($!)
for _ in $(seq 1200); do grep -q "clip uploaded" "$DEMO/service.log" && break; sleep 0.1; done
kill -TERM "$SERVICE"; wait "$SERVICE" || true
sleep 0.2
CLIP=$(grep -o 'clip uploaded clip=[^ ]*' "$DEMO/service.log" | head -n1 | cut -d= -f2)
if [ -z "$CLIP" ]; then echo "demo: no clip was uploaded within 120 s"; exit 1; fi
mkdir -p "$DEMO/downloaded"
LOCAL="$DEMO/downloaded/$(basename "$CLIP")"
cargo run --quiet --release --locked --example fetch_clip -- "$CLIP" "$LOCAL"
echo
echo "demo: uploaded blob '$CLIP' to container '$AZ_CONTAINER_NAME'"
echo "      at http://127.0.0.1:$AZ_PORT/devstoreaccount1/$AZ_CONTAINER_NAME/$CLIP (Azurite, now stopped)"
echo "      downloaded back to $LOCAL:" \
  "$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=codec_name,width,height,nb_read_frames,avg_frame_rate -of csv=p=0 "$LOCAL")"
echo "      (codec, width, height, frame rate, frames). Play it in a browser or with ffplay."
# The snapshot and the event record went up beside the clip.
for extra in "${CLIP%.mp4}.jpg" "${CLIP%.mp4}.json"; do
  cargo run --quiet --release --locked --example fetch_clip -- "$extra" "$DEMO/downloaded/$(basename "$extra")"
done
echo "      beside it: $(basename "${CLIP%.mp4}.jpg") ($(stat -c %s "$DEMO/downloaded/$(basename "${CLIP%.mp4}.jpg")") bytes," \
  "the frame with the most motion) and the event record $(basename "${CLIP%.mp4}.json"):"
head -c 600 "$DEMO/downloaded/$(basename "${CLIP%.mp4}.json")"; echo " ..."
