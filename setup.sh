#!/usr/bin/env bash
# Installs the Debian packages moetrace builds against (only those missing), and the extra packages
# named as arguments (fuzz/run.sh: clang and its fuzzer runtime).
set -euo pipefail
pkgs=(build-essential cmake pkg-config libcjson-dev libcmocka-dev libpcre2-dev libutf8proc-dev libcairo2-dev libpango1.0-dev fonts-wqy-microhei fonts-freefont-ttf libmicrohttpd-dev libcurl4-openssl-dev "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
