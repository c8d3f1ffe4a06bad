"""The built test collector as a child process: shared by the collector-config tests and the end-to-end tests.

The binary is $GLIA_OTELCOL_BIN, else what `bash collector-config/build.sh` leaves in .build/collector/; without
it a test asking for it skips (fails under CI=true).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import REPO, free_port, need

CONFIG_DIR = REPO / "collector-config"
CONFIG = CONFIG_DIR / "config.yaml"
DEFAULT_BINARY = REPO / ".build" / "collector" / "otelcol-glia"


def collector_binary() -> Path:
    """The test collector binary; skips the test (fails under CI) when there is none."""
    path = Path(os.environ.get("GLIA_OTELCOL_BIN") or DEFAULT_BINARY)
    need(
        path.is_file() and os.access(path, os.X_OK),
        f"no collector binary at {path}: run `bash collector-config/build.sh` or set GLIA_OTELCOL_BIN",
    )
    return path


def loopback_env(queue_dir: Path, receiver_url: str = "http://127.0.0.1:9", **overrides: str) -> dict[str, str]:
    """Environment for config.yaml listening on free loopback ports, queueing in `queue_dir`.

    Short batch and retry intervals keep tests fast; `overrides` sets any other GLIA_COLLECTOR_* variable.
    """
    return {
        **os.environ,
        "GLIA_RECEIVER_ENDPOINT": receiver_url,
        "GLIA_COLLECTOR_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
        "GLIA_COLLECTOR_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}",
        "GLIA_COLLECTOR_HEALTH_ENDPOINT": f"127.0.0.1:{free_port()}",
        "GLIA_COLLECTOR_METRICS_HOST": "127.0.0.1",
        "GLIA_COLLECTOR_METRICS_PORT": str(free_port()),
        "GLIA_COLLECTOR_QUEUE_DIR": str(queue_dir),
        "GLIA_COLLECTOR_BATCH_TIMEOUT": "100ms",
        "GLIA_COLLECTOR_RETRY_MAX_INTERVAL": "1s",
        **overrides,
    }


class Collector:
    """The built collector running `config` as a child process; starts at construction, waits until healthy.

    `restart()` starts it again with the same environment (same ports, same queue directory).
    """

    def __init__(self, binary: Path, env: dict[str, str], log: Path, config: Path = CONFIG) -> None:
        self.binary = binary
        self.env = env
        self.config = config
        self.http_url = f"http://{env['GLIA_COLLECTOR_HTTP_ENDPOINT']}"
        self.metrics_url = f"http://{env['GLIA_COLLECTOR_METRICS_HOST']}:{env['GLIA_COLLECTOR_METRICS_PORT']}/metrics"
        self._log = log
        self.process = self._spawn()
        self._wait_healthy()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self._log.open("ab") as out:
            return subprocess.Popen(
                [str(self.binary), f"--config={self.config}"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def _wait_healthy(self, timeout: float = 30.0) -> None:
        url = f"http://{self.env['GLIA_COLLECTOR_HEALTH_ENDPOINT']}/"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"collector exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"collector not healthy after {timeout} s:\n{self.log()}")

    def log(self, tail: int = 5000) -> str:
        """The last `tail` characters of the collector's log (all of its runs so far)."""
        return self._log.read_text(errors="replace")[-tail:]

    def post(self, path: str, body: bytes) -> int:
        """POST a protobuf body to the collector's OTLP/HTTP receiver; the status."""
        request = urllib.request.Request(
            self.http_url + path, data=body, headers={"Content-Type": "application/x-protobuf"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
            return status

    def metric(self, name: str) -> float:
        """Sum of the collector's own Prometheus metric `name` over its label sets (0 when absent)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
        return sum(float(value) for value in pattern.findall(text))

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def restart(self) -> None:
        """Start the collector again (after `stop`) with the same environment and queue directory."""
        assert self.process.poll() is not None, "restart() of a running collector"
        self.process = self._spawn()
        self._wait_healthy()
