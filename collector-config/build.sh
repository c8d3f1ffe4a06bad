#!/usr/bin/env bash
# Build the test collector described by collector-config/builder-config.yaml with the OpenTelemetry Collector
# Builder (ocb), into .build/collector/ (git-ignored). A build is reused while the manifest is unchanged: the
# manifest's sha256 is stored next to the binary and compared first. Prints the binary's path as its last line.
#
# Needs: Go (the version the collector's go.mod asks for, see README.md) and the Go module proxy.
# Usage: bash collector-config/build.sh          # build or reuse
#        GLIA_COLLECTOR_FORCE_BUILD=1 bash ...    # rebuild even when the manifest has not changed
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
manifest=$repo/collector-config/builder-config.yaml
out=$repo/.build/collector
tools=$repo/.build/tools
binary=$out/otelcol-glia
stamp=$out/builder-config.sha256

# The release is dist.version; ocb of the same release builds it (its go.mod template pins that release).
release=$(sed -n 's/^  version: *\([0-9.]*\) *$/\1/p' "$manifest" | head -n 1)
if [[ -z $release ]]; then
    echo "build.sh: no dist.version in $manifest" >&2
    exit 1
fi
want=$(sha256sum "$manifest" | cut -d ' ' -f 1)

up_to_date() {
    [[ -x $binary && -f $stamp && $(cat "$stamp") == "$want" && -z ${GLIA_COLLECTOR_FORCE_BUILD:-} ]]
}

mkdir -p "$repo/.build"
# One build at a time (two test sessions, or CI and a developer, may start one together).
exec 9>"$repo/.build/collector.lock"
flock 9

if up_to_date; then
    echo "build.sh: $binary is up to date with $(basename "$manifest")" >&2
    echo "$binary"
    exit 0
fi

# The official Go tarball installs to /usr/local/go, which a non-login shell may not have on PATH.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
    PATH=/usr/local/go/bin:$PATH
fi
if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: go is not on PATH; install Go (see collector-config/README.md) to build the test collector" >&2
    exit 1
fi

ocb=$tools/ocb-v$release
if [[ ! -x $ocb ]]; then
    echo "build.sh: installing ocb v$release with go install" >&2
    mkdir -p "$tools/tmp"
    GOBIN=$tools/tmp go install "go.opentelemetry.io/collector/cmd/builder@v$release"
    mv "$tools/tmp/builder" "$ocb"
fi

# The build folder sits inside this git work tree; the binary needs no VCS stamp, and stamping can fail in CI.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"

# Build into a fresh folder, then swap it in, so a failed build never leaves a binary that looks current.
work=$(mktemp -d "$repo/.build/collector.new.XXXXXX")
trap 'rm -rf "$work" "$work.yaml"' EXIT
sed "s|^  output_path:.*|  output_path: $work|" "$manifest" >"$work.yaml"

echo "build.sh: building the collector with ocb v$release (a first build takes a few minutes)" >&2
start=$SECONDS
"$ocb" --config="$work.yaml" >&2
echo "$want" >"$work/builder-config.sha256"
rm -rf "$out"
mv "$work" "$out"
echo "build.sh: built in $((SECONDS - start)) s" >&2
echo "$binary"
