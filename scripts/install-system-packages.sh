#!/bin/sh
# Installs the system packages dasr needs, only when they are missing: the speech synthesizers
# of the demo corpus (espeak-ng; flite; festival with two diphone voices and an HTS voice), sox
# (pitch and tempo changes), and pocketsphinx-testdata (10 recordings of real people, used only by
# the real-speech check, never for training). Explains what to do when apt cannot be used.
set -e
PACKAGES="espeak-ng libsndfile1 flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox pocketsphinx-testdata chromium chromium-driver"
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
