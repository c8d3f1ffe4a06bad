#!/bin/sh
# Installs R, the Debian packages the glia R client and its tests need, and the glia R package itself.
# Idempotent: with everything in place it only compares a checksum of glia-r/ and exits (well under a second).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
# r-cran-testthat runs the unit tests; time (GNU time) is the reference the end-to-end test compares peak RSS with.
packages="r-base-core r-cran-jsonlite r-cran-curl r-cran-ps r-cran-digest r-cran-testthat time"

missing=""
for p in $packages; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
if [ -n "$missing" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-r: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -q --no-install-recommends $missing; then
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends $missing
  fi
fi

# The library R CMD INSTALL writes to: the first writable entry of .libPaths(), else the user library.
lib=$(Rscript -e 'w <- .libPaths()[file.access(.libPaths(), 2) == 0]; cat(if (length(w)) w[[1]] else Sys.getenv("R_LIBS_USER"))')
mkdir -p "$lib"
stamp="$lib/glia/glia-source.sha256"
sum=$(cd "$repo/glia-r" && find . -type f ! -path './tests/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
  echo "install-r: glia R package up to date in $lib"
  exit 0
fi
R CMD INSTALL --no-docs --no-multiarch -l "$lib" "$repo/glia-r"
echo "$sum" > "$stamp"
echo "install-r: installed the glia R package into $lib"
