#!/usr/bin/env bash
# Shared by scripts/demo and scripts/test: installs the Debian packages Courseway builds and
# tests with, only the ones missing, and points cargo at a target directory outside the clone
# so a fresh clone reuses an earlier build (RocksDB alone takes ~16 minutes to compile).
set -euo pipefail

COURSEWAY_PACKAGES=(
  build-essential pkg-config
  libclang-dev                       # bindgen for RocksDB
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  gstreamer1.0-rtsp libgstrtspserver-1.0-dev  # RTSP pull, and the test RTSP server
  ffmpeg                             # ffprobe, for tests that check produced media
  prometheus                         # promtool, for the tests of deploy/prometheus
  chromium chromium-driver           # headless Chromium, for the browser tests of the TV page
  nginx-light                        # the nginx cache tier the fleet benchmark compares against
  libnginx-mod-rtmp                  # an RTMP server for the live RTMP pull test
)

missing=()
for pkg in "${COURSEWAY_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "courseway: installing missing packages: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "courseway: cargo not found; install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/courseway/target}"
mkdir -p "$CARGO_TARGET_DIR"
