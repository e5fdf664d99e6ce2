#!/usr/bin/env bash
# Installs what `loadtest compare` needs besides Rust: Mosquitto (Debian package `mosquitto`),
# used only as a binary that loadtest starts itself with a generated config on a free loopback
# port. Idempotent: does nothing when `mosquitto` is already installed. The system broker that
# the package may start on 1883 is left alone; loadtest never connects to it.
set -euo pipefail

have_mosquitto() {
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || [ -x /usr/local/sbin/mosquitto ]
}

if have_mosquitto; then
    echo "mosquitto: already installed ($(command -v mosquitto || echo /usr/sbin/mosquitto))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "mosquitto is missing and apt-get is not available: install Mosquitto (2.x, with websockets) by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq mosquitto
have_mosquitto && echo "mosquitto: installed"
