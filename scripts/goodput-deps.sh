#!/usr/bin/env bash
# Installs what the goodput benchmark (benches/src/bin/goodput.rs) needs beyond the build: nginx
# and curl for the TCP baseline, iproute2 for the network namespaces. Only missing packages are
# installed. Run as root (the benchmark itself needs root for namespaces and TUN devices).
set -euo pipefail

packages=(nginx-light curl iproute2)
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "goodput: installing missing packages: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# The Debian package may have started its own nginx on port 80; the benchmark runs its own inside
# a namespace and does not need it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
  ${sudo:-} systemctl stop nginx || true
fi
