"""Real Nextflow 24.10 from the core jars of .ci/install-nextflow.sh, for the tests that run pipelines.

Nextflow starts as `java -cp 'LIB/*' nextflow.cli.Launcher` (no launcher script, no plugins), offline, with its home
inside the pipeline's directory; without the jars or java `nextflow_lib()` skips the test (fails it under CI=true).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO, need
from tests.helpers import GLIA

NXF_TIMEOUT_S = 180


def nextflow_lib() -> Path:
    """The jar directory of .ci/install-nextflow.sh (NXF_LIB, else .build/nextflow/env)."""
    given = os.environ.get("NXF_LIB")
    lib = Path(given) if given else None
    env = REPO / ".build" / "nextflow" / "env"
    if lib is None and env.is_file():
        for line in env.read_text().splitlines():
            if line.startswith("NXF_LIB="):
                lib = Path(line.split("=", 1)[1])
    need(lib is not None and lib.is_dir(), "no Nextflow jars (run `bash .ci/install-nextflow.sh`)")
    need(shutil.which("java"), "java is not installed")
    assert lib is not None
    return lib


def nextflow(
    lib: Path, cwd: Path, env: dict[str, str], *args: str, timeout: float = NXF_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """`nextflow run ARGS...` from the core jars, in `cwd`, offline, its home inside `cwd`."""
    env = {**env, "NXF_HOME": str(cwd / ".nxf-home"), "NXF_OFFLINE": "true", "NXF_ANSI_LOG": "false"}
    command = ["java", "-cp", f"{lib}/*", "nextflow.cli.Launcher", "run", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def glia_config(path: Path, *args: str) -> Path:
    """`glia nextflow-config ARGS... -o PATH`; returns PATH."""
    proc = subprocess.run([GLIA, "nextflow-config", "-o", str(path), *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return path
