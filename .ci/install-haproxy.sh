#!/usr/bin/env bash
# Install HAProxy from Debian's packages for the gateway tier's end-to-end test (tests/e2e/test_gateway.py): the
# HTTP load balancer between the gateway collector and two receivers (collector-config/haproxy.cfg). No daemon is
# left running: the test starts its own haproxy in the foreground with that file and stops it at the end; the
# package's own service (an empty default configuration) is stopped if the package scripts started it.
#
# Idempotent: the package is installed only when missing. Runs as root (through sudo otherwise).
# Usage: bash .ci/install-haproxy.sh
set -euo pipefail

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

if ! dpkg-query -W -f='${Status}' haproxy 2>/dev/null | grep -q "install ok installed"; then
    echo "install-haproxy.sh: installing haproxy" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends haproxy
    # Where an init system started the packaged service, stop it: the tests run their own instances.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet haproxy 2>/dev/null; then
        $sudo systemctl stop haproxy || true
    elif command -v service >/dev/null 2>&1 && $sudo service haproxy status >/dev/null 2>&1; then
        $sudo service haproxy stop || true
    fi
fi
haproxy -v | sed -n 1p  # sed reads it all: head would close the pipe early (SIGPIPE under pipefail)
