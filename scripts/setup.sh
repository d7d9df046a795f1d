#!/usr/bin/env bash
# Installs the build and test dependencies from Debian's packages. Idempotent: does nothing when they are
# all present. Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(cmake g++ make pkg-config liburing-dev libfmt-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
          libgtest-dev libgmock-dev libbenchmark-dev clang-format-14)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
