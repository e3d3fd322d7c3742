#!/bin/sh
# Puts etcd (Debian main's etcd-server) under .venv/etcd, unpacked from its .deb and not installed:
# installing the package would start an etcd service on the machine. The tests and benchmarks of
# the elastic run's replicated store start their own etcd members from there. Apache-2.0.
set -e
DEST=.venv/etcd
[ -x "$DEST/usr/bin/etcd" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "dasr: apt-get is not available; the etcd tests skip (put etcd 3.4 or later on PATH to run them)" >&2
    exit 0
fi
debs=$(mktemp -d)
trap 'rm -rf "$debs"' EXIT
if ! (cd "$debs" && apt-get download -qq etcd-server >/dev/null 2>&1); then
    SUDO=""
    [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    $SUDO apt-get update -qq >/tmp/dasr-apt.log 2>&1 || true
    if ! (cd "$debs" && apt-get download -qq etcd-server >>/tmp/dasr-apt.log 2>&1); then
        echo "dasr: could not download etcd-server (log: /tmp/dasr-apt.log); the etcd tests skip" >&2
        exit 0
    fi
fi
mkdir -p "$DEST"
dpkg-deb -x "$debs"/etcd-server_*.deb "$DEST"
echo "dasr: etcd $("$DEST/usr/bin/etcd" --version | head -1 | cut -d' ' -f3) unpacked into $DEST"
