#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian 12 machine. Idempotent: a second run
# installs nothing and takes a few seconds.
#   apt:  OpenCV 4.6 + clang (the binding generators of the opencv and ffmpeg-next crates), libavcodec (the
#         camera's decoding), GStreamer (the camera's RTSP and parsing, the clip writer and the test RTSP
#         camera; -dev for the gstreamer crates), ffmpeg (test videos)
#   npm:  Azurite (the Azure Blob emulator), pinned, into .tools/ inside the project
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  pkg-config clang libclang-dev libopencv-dev libavcodec-dev libavformat-dev libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi
  ffmpeg
)
AZURITE_VERSION=3.37.0

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Node and npm: any install will do (the machine may carry NodeSource's nodejs, which bundles npm).
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! [ -x .tools/node_modules/.bin/azurite-blob ] \
   || ! grep -q "\"version\": \"$AZURITE_VERSION\"" .tools/node_modules/azurite/package.json 2>/dev/null; then
  echo "setup: installing azurite@$AZURITE_VERSION into .tools/"
  mkdir -p .tools
  npm install --prefix .tools --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
fi
echo "setup: ready"
