# Sourced by scripts/container-test.sh and scripts/cross-test.sh (not run on its own): the RTSP test camera
# and Azurite on 127.0.0.1, the env file a container gets to reach them over host networking, bounded waits.
# Expects to run from the project root after scripts/setup.sh.

AZURITE_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CAMERA_USER=watcher
CAMERA_PASSWORD="ctest-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"   # must never show up in a log
FIXTURE_PIDS=()

# Stops every server started here (call from the script's EXIT trap). Azurite only begins a graceful close
# on the first SIGTERM and may wait for idle connections: whatever still runs after 5 s is killed.
stop_fixtures() {
  local pid watchdog
  ((${#FIXTURE_PIDS[@]})) || return 0
  kill "${FIXTURE_PIDS[@]}" 2>/dev/null || true
  (sleep 5; kill -KILL "${FIXTURE_PIDS[@]}" 2>/dev/null) &
  watchdog=$!
  for pid in "${FIXTURE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  kill "$watchdog" 2>/dev/null || true
  wait "$watchdog" 2>/dev/null || true
  FIXTURE_PIDS=()
}

# The first port of LOW..HIGH that nothing listens on at 127.0.0.1.
free_port() {
  /usr/bin/python3 - "$1" "$2" <<'EOF'
import socket, sys
for port in range(int(sys.argv[1]), int(sys.argv[2]) + 1):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        sys.exit(0)
sys.exit("no free port in %s-%s" % (sys.argv[1], sys.argv[2]))
EOF
}

# wait_for SECONDS WHAT COMMAND...: runs COMMAND every half second until it succeeds; fails after SECONDS.
wait_for() {
  local seconds=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then echo "FAIL: $what (waited ${seconds}s)" >&2; return 1; fi
    sleep 0.5
  done
}

# start_azurite DIR PORT: Azurite's blob service on 127.0.0.1:PORT, data in DIR; sets AZ_CONNSTRING.
start_azurite() {
  mkdir -p "$1"
  .tools/node_modules/.bin/azurite-blob --blobHost 127.0.0.1 --blobPort "$2" --location "$1" \
    --skipApiVersionCheck --loose --silent > "$1.log" 2>&1 &
  FIXTURE_PIDS+=($!)
  AZ_CONNSTRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$AZURITE_KEY;BlobEndpoint=http://127.0.0.1:$2/devstoreaccount1;"
  wait_for 30 "Azurite listens on 127.0.0.1:$2" bash -c "exec 3<>/dev/tcp/127.0.0.1/$2"
}

# start_camera PORT LOG: the moving-box RTSP camera (with a password) on 127.0.0.1:PORT; sets CAMERA_PID.
start_camera() {
  /usr/bin/python3 tests/support/rtsp_camera.py --port "$1" --user "$CAMERA_USER" --password "$CAMERA_PASSWORD" \
    > "$2" 2>&1 &
  CAMERA_PID=$!
  FIXTURE_PIDS+=("$CAMERA_PID")
  wait_for 30 "the test camera serves on 127.0.0.1:$1" grep -q READY "$2" || { cat "$2" >&2; return 1; }
}

stop_camera() {
  kill "$CAMERA_PID" 2>/dev/null || true
  wait "$CAMERA_PID" 2>/dev/null || true
}

# write_env_file FILE CAMERA_PORT [NAME=VALUE...]: the service's configuration (this camera, the Azurite of
# start_azurite) for a container on the host's network. ENV_FILE_QUOTED=1 quotes the connection string as
# .env.example advises for compose (which removes the quotes); `podman/docker run --env-file` would keep
# them, so plain is the default.
write_env_file() {
  local file=$1 camera_port=$2 q=""
  shift 2
  [ "${ENV_FILE_QUOTED:-0}" = 1 ] && q='"'
  {
    echo "RTSP_URL=rtsp://$CAMERA_USER:$CAMERA_PASSWORD@127.0.0.1:$camera_port/stream"
    echo "AZ_STORAGE_CONNSTRING=$q$AZ_CONNSTRING$q"
    printf '%s\n' "$@"
  } > "$file"
  chmod 0600 "$file"
}

# A test video with known motion (the same scene as tests/support: a box crosses from 4 s to 8 s).
make_motion_video() {
  ffmpeg -v error -y -f lavfi -i smptebars=size=640x360:rate=15 -f lavfi -i color=c=white:size=100x100:rate=15 \
    -filter_complex "[0:v]colorchannelmixer=rr=0.5:gg=0.5:bb=0.5[bg];[bg][1:v]overlay=x='if(lt(t,4),-200,if(lt(t,8),-100+(t-4)*210,800))':y=130:shortest=1,format=yuv420p[v]" \
    -map '[v]' -t 12 -r 15 -c:v libx264 -preset veryfast -g 15 -bf 0 -pix_fmt yuv420p "$1"
}
