#!/bin/sh
# Installs the system packages dasr needs (the espeak-ng voices of the demo corpus),
# only when they are missing. Explains what to do when apt cannot be used.
set -e
PACKAGES="espeak-ng libsndfile1"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "dasr: installing system packages:$missing"
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "dasr: cannot install$missing: not root and no sudo. Install them by hand: apt-get install$missing" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "dasr: apt-get is not available; install$missing with your system's package manager" >&2
    exit 1
fi
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq$missing; } >/tmp/dasr-apt.log 2>&1; then
    echo "dasr: apt-get failed to install$missing (log: /tmp/dasr-apt.log)" >&2
    exit 1
fi
