#!/usr/bin/env bash
# One-time setup on Debian 12 / Ubuntu with Python 3.11 or 3.12: the system packages that SAPIEN's
# CPU renderer needs (Mesa >= 25 lavapipe; Debian 12 has it in bookworm-backports), then the Python
# packages. Safe to run again. On a machine with an NVIDIA driver you can skip the apt part.
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if command -v apt-get >/dev/null; then
  if grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release \
     && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null
  fi
  $SUDO apt-get update -qq
  target=""; grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release && target="-t bookworm-backports"
  $SUDO apt-get install -y -qq $target mesa-vulkan-drivers libvulkan1 libegl1 libgl1 >/dev/null
fi
python3 -m pip install -q -r requirements.txt
