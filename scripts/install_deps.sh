#!/usr/bin/env bash
# Installs the Debian 12 packages persona needs, only those missing (apt-get update once, then install).
# Extra package names may be passed as arguments.
set -euo pipefail

packages=(cmake ninja-build g++ pkg-config libeigen3-dev libxsimd-dev libfmt-dev libtbb-dev nlohmann-json3-dev
          catch2 libbenchmark-dev libxxhash-dev libpcre2-dev libonig-dev libutf8proc-dev libsentencepiece-dev clang-format-14 clang-14 libclang-rt-14-dev "$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install_deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install_deps: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
