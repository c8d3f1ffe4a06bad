#!/usr/bin/env bash
# Fetch Nextflow's core jars (io.nextflow:nextflow and every runtime dependency) with Maven into
# .build/nextflow/<version>/lib/ (git-ignored), for the benchmark and the tests that run real Nextflow pipelines.
# Nextflow runs from them on Java 17 with no launcher script and no plugins (none are reachable here, so nothing
# may depend on one):
#
#     java -cp "$(bash .ci/install-nextflow.sh)/*" nextflow.cli.Launcher run main.nf -with-trace
#
# Idempotent: a complete download (a stamp written last) is reused. The jar directory is printed as the last line
# of stdout and also written to .build/nextflow/env (NXF_LIB=...), which tests and bench/accuracy.py read;
# .ci/run exports it as NXF_LIB for the test run.
# Needs: java 17+, mvn (3.8 is enough), and the Maven repository (mvn's default, or the one ~/.m2/settings.xml names).
# Usage: bash .ci/install-nextflow.sh                  # fetch or reuse 24.10.0
#        NXF_VERSION=24.10.0 bash .ci/install-nextflow.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=${NXF_VERSION:-24.10.0}
base=$repo/.build/nextflow
out=$base/$version
lib=$out/lib
stamp=$out/complete

mkdir -p "$base"
# One download at a time (CI and a developer, or two test sessions, may start one together).
exec 9>"$base/install.lock"
flock 9

write_env() {
    printf 'NXF_LIB=%s\nNXF_VERSION=%s\n' "$lib" "$version" >"$base/env.tmp"
    mv "$base/env.tmp" "$base/env"
}

if [[ -f $stamp && -d $lib ]]; then
    echo "install-nextflow.sh: Nextflow $version is in $lib ($(find "$lib" -name '*.jar' | wc -l) jars)" >&2
    write_env
    echo "$lib"
    exit 0
fi

for tool in java mvn; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-nextflow.sh: $tool is not on PATH (Debian: openjdk-17-jre-headless, maven)" >&2
        exit 1
    fi
done

rm -rf "$out"
mkdir -p "$out"
# A pom whose only dependency is Nextflow: copy-dependencies then brings it and its runtime closure into lib/.
cat >"$out/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.glia</groupId>
  <artifactId>nextflow-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>io.nextflow</groupId>
      <artifactId>nextflow</artifactId>
      <version>$version</version>
    </dependency>
  </dependencies>
</project>
EOF
echo "install-nextflow.sh: fetching io.nextflow:nextflow:$version and its dependencies with Maven" >&2
if ! mvn -q -B -f "$out/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$lib" >"$out/mvn.log" 2>&1; then
    cat "$out/mvn.log" >&2
    echo "install-nextflow.sh: Maven could not fetch io.nextflow:nextflow:$version (log above)" >&2
    exit 1
fi

# A smoke test: the launcher starts and knows its version, so a broken download is found here, not in a test.
if ! java -cp "$lib/*" nextflow.cli.Launcher -version >"$out/version.txt" 2>&1; then
    cat "$out/version.txt" >&2
    echo "install-nextflow.sh: the jars in $lib do not start Nextflow" >&2
    exit 1
fi
grep -q "$version" "$out/version.txt" || {
    cat "$out/version.txt" >&2
    echo "install-nextflow.sh: Nextflow did not report version $version" >&2
    exit 1
}
touch "$stamp"
echo "install-nextflow.sh: Nextflow $version is in $lib ($(find "$lib" -name '*.jar' | wc -l) jars)" >&2
write_env
echo "$lib"
