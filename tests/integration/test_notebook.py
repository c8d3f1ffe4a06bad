"""The interactive mode in a real Jupyter kernel: notebooks executed by nbclient on ipykernel (this venv's Python, a
kernelspec of the test's own), their runs exported to a real receiver while the kernel lives, read back from
PostgreSQL row by row.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ReceiverServer, need
from tests.helpers import Sql, client_env

KERNEL = "glia-test-venv"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def kernel_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kernelspec that starts ipykernel on this venv's Python, found through JUPYTER_PATH alone."""
    for module in ("nbclient", "nbformat", "ipykernel"):
        need(importlib.util.find_spec(module), f"{module} is not installed (the dev group has it: uv sync)")
    share = tmp_path / "jupyter"
    spec = share / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(share))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    return tmp_path


def kernel_env(receiver: ReceiverServer, tmp: Path, session: str | None) -> dict[str, str]:
    env = client_env(receiver.url, tmp / "spool", IPYTHONDIR=str(tmp / "ipython"))  # no profile of the user's
    env.pop("JPY_SESSION_NAME", None)
    env.pop("OTEL_SERVICE_NAME", None)
    if session is not None:
        env["JPY_SESSION_NAME"] = session
    return env


def execute(
    sources: list[str], env: dict[str, str], cwd: Path, sql: Sql, rows: int, cell_ids: dict[int, str] | None = None
) -> tuple[Any, set[int]]:
    """Run the cells in one kernel, then wait (the kernel still running) until `rows` spans are stored. The cells
    in `cell_ids` are sent with their id as JupyterLab sends it (nbclient sends none).

    Returns the executed notebook and the indices of the cells whose execution the kernel reported as failed."""
    import nbformat
    from jupyter_core.utils import run_sync
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=60, resources={"metadata": {"path": str(cwd)}})
    failed: set[int] = set()
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            if index in (cell_ids or {}):
                assert client.kc is not None
                content = {"code": cell.source, "silent": False, "store_history": True, "user_expressions": {}}
                msg = client.kc.session.msg("execute_request", content, metadata={"cellId": cell_ids[index]})
                client.kc.shell_channel.send(msg)
                reply = run_sync(client.kc.get_shell_msg)(timeout=30)
                assert reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
                cell.execution_count = reply["content"]["execution_count"]
                continue
            try:
                client.execute_cell(cell, index)
            except CellExecutionError:
                failed.add(index)
        # Runs are exported as they end, not at the kernel's exit: a notebook's kernel lives for hours.
        deadline = time.monotonic() + 20
        while sql("SELECT count(*) AS n FROM spans")[0]["n"] < rows and time.monotonic() < deadline:
            time.sleep(0.1)
    return nb, failed


def by_name(sql: Sql) -> dict[str, dict[str, Any]]:
    rows = sql("SELECT * FROM spans ORDER BY start_time_unix_nano")
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        for column in ("attributes", "resource", "events"):
            if isinstance(row[column], str):
                row[column] = json.loads(row[column])
        assert row["name"] not in out, f"two runs named {row['name']!r}"
        out[row["name"]] = row
    return out


def error_output(cell: Any) -> dict[str, Any]:
    (error,) = [o for o in cell.outputs if o.output_type == "error"]
    return {"ename": error.ename, "evalue": error.evalue, "traceback": ANSI.sub("", "\n".join(error.traceback))}


def test_track_cells_autotrack_and_a_failing_cell(
    kernel_dir: Path, receiver: ReceiverServer, sql: Sql, tmp_path: Path
) -> None:
    notebook = str(tmp_path / "analysis.ipynb")
    sources = [
        "%load_ext glia_otel",
        # 1: a named run with custom values, 60 MiB touched in it
        "%%track fit lr=0.1 epochs=3 dataset=cifar10 note=\"two words\" tags=['a', 'b'] version='1.10' n={6*7}\n"
        "buf = bytearray(60 * 2**20)\n"
        "len(buf)",
        "%%track\nsum(range(1000))",  # 2: named after its execution count
        '%%track boom stage=load\nerr = ValueError("bad input 42")\nraise err',  # 3: fails
        "import sys\nprint(sys.last_value is err)",  # 4: the exception the user got is the cell's own
        'raise ValueError("bad input 42")',  # 5: the same failure untracked, for its traceback
        "%glia_autotrack on",  # 6
        "a = 1",  # 7
        'import glia_otel\nwith glia_otel.track("inner"):\n    pass',  # 8
        "1 / 0",  # 9
        "%glia_autotrack off",  # 10: the last run
        "b = 2",  # 11
        # 12: top-level await in a %%track cell, a block inside it its child
        '%%track async_cell\nimport asyncio\nwith glia_otel.track("in_async"):\n    await asyncio.sleep(0.01)\n"done"',
        "%%track bad_syntax\nx = (",  # 13: never runs, still a failed run
    ]
    nb, failed = execute(sources, kernel_env(receiver, tmp_path, notebook), tmp_path, sql, rows=11)
    cells = nb.cells
    assert failed == {3, 5, 9, 13}, "the kernel reports exactly the failing cells as failed"
    count = [cell.execution_count for cell in cells]
    assert count == list(range(1, len(cells) + 1))

    rows = by_name(sql)
    assert set(rows) == {
        *("fit", f"cell {count[2]}", "boom", "inner", "async_cell", "in_async", "bad_syntax"),
        *(f"cell {count[i]}" for i in (7, 8, 9, 10)),
    }

    # What the user saw: the cell's value, and its exception unchanged (the same object, the traceback of a cell
    # without %%track: one frame, the user's, nothing of IPython's magic machinery or glia's)
    assert cells[1].outputs[0]["data"]["text/plain"] == str(60 * 2**20)
    tracked, plain = error_output(cells[3]), error_output(cells[5])
    assert tracked["ename"] == plain["ename"] == "ValueError"
    assert tracked["evalue"] == plain["evalue"] == "bad input 42"
    for tb in (tracked["traceback"], plain["traceback"]):
        assert tb.count("Cell In[") == 1, tb
        assert "run_cell_magic" not in tb and "glia_otel" not in tb, tb
    assert "----> 3 raise err" in tracked["traceback"]
    assert cells[4].outputs[0]["text"] == "True\n"

    fit = rows["fit"]
    assert fit["run_kind"] == "block" and fit["exit_code"] == 0 and fit["status_code"] == 0
    assert fit["parent_span_id"] is None
    attrs = fit["attributes"]
    assert attrs["lr"] == 0.1 and attrs["epochs"] == 3 and attrs["n"] == 42
    assert attrs["dataset"] == "cifar10" and attrs["note"] == "two words" and attrs["version"] == "1.10"
    assert attrs["tags"] == ["a", "b"]
    assert attrs["glia.notebook.execution_count"] == count[1]
    assert fit["peak_rss_method"] == "hwm-reset"
    # the kernel's own memory at the cell's start, then the 60 MiB the cell touched on top of it
    assert fit["peak_rss_bytes"] - attrs["glia.memory.start_rss_bytes"] >= 0.97 * 60 * 2**20, fit["peak_rss_bytes"]
    assert fit["cpu_user_seconds"] is not None and fit["duration_ns"] > 0

    for name in ("boom", f"cell {count[9]}"):
        row = rows[name]
        assert row["status_code"] == 2 and row["exit_code"] == 1, name
        (event,) = [e for e in row["events"] if e["name"] == "exception"]
        expected = ("ValueError", "bad input 42") if name == "boom" else ("ZeroDivisionError", "division by zero")
        assert (event["attributes"]["exception.type"], event["attributes"]["exception.message"]) == expected
        assert row["status_message"] == f"{expected[0]}: {expected[1]}"
    assert rows["boom"]["attributes"]["stage"] == "load"

    # Autotrack: each cell a run named by its execution count, a block tracked in one a child of the cell's run
    for i in (7, 8, 10):
        row = rows[f"cell {count[i]}"]
        assert row["status_code"] == 0 and row["exit_code"] == 0
        assert row["attributes"]["glia.notebook.execution_count"] == count[i]
    cell_8 = rows[f"cell {count[8]}"]
    assert rows["inner"]["parent_span_id"] == cell_8["span_id"]
    assert rows["inner"]["trace_id"] == cell_8["trace_id"]
    assert cells[12].outputs[0]["data"]["text/plain"] == "'done'"
    assert rows["in_async"]["parent_span_id"] == rows["async_cell"]["span_id"]
    assert rows["async_cell"]["duration_ns"] >= 10_000_000 and rows["async_cell"]["status_code"] == 0
    assert rows["bad_syntax"]["status_code"] == 2 and rows["bad_syntax"]["status_message"].startswith("SyntaxError")

    # Every cell's run carries the notebook, and the service is named after it (not after ipykernel's launcher)
    for name, row in rows.items():
        assert row["attributes"].get("glia.notebook.path") == (None if name.startswith("in") else notebook), name
        assert row["service_name"] == "analysis"
    assert not list((tmp_path / "spool").glob("*")), "nothing should be spooled with the receiver up"


def test_no_path_when_the_kernel_knows_none_and_vscodes_when_it_sets_one(
    kernel_dir: Path, receiver: ReceiverServer, sql: Sql, tmp_path: Path
) -> None:
    vscode = str(tmp_path / "from-vscode.ipynb")
    sources = [
        "%load_ext glia_otel",
        # loading the extension configures nothing and imports nothing of glia's but the extension itself
        "import sys\nprint(sorted(m for m in sys.modules if m.startswith('glia_otel')))",
        "%%track lone\npass",
        # the magic called directly, as a notebook exported to a script does (no transformer on that path)
        "get_ipython().run_cell_magic('track', 'direct k=1', 'v = 5\\nv * 2')",
        "get_ipython().run_cell_magic('track', 'direct_fail', 'raise KeyError(7)')",
        "%glia_autotrack on",  # 5
        "x = 1",
        f"__vsc_ipynb_file__ = {vscode!r}",  # 7: what VS Code's Jupyter extension sets in the kernel
        "y = 2",  # 8: sent with a cell id, as JupyterLab sends it
        "%unload_ext glia_otel",  # 9: its own run ends as the extension goes
        "z = 3",
    ]
    env = kernel_env(receiver, tmp_path, None)
    nb, failed = execute(sources, env, tmp_path, sql, rows=7, cell_ids={8: "5a1e3c2b-cell"})
    cells = nb.cells
    assert failed == {4}
    assert cells[1].outputs[0]["text"] == "['glia_otel', 'glia_otel._log', 'glia_otel._notebook']\n"
    assert cells[3].outputs[0]["data"]["text/plain"] == "10"
    assert error_output(cells[4])["ename"] == "KeyError"
    time.sleep(1)  # a run of the last cell, were there one, would be stored by now
    rows = by_name(sql)
    count = [cell.execution_count for cell in cells]
    assert set(rows) == {"lone", "direct", "direct_fail", *(f"cell {count[i]}" for i in (6, 7, 8, 9))}
    assert rows["direct"]["attributes"]["k"] == 1 and rows["direct"]["exit_code"] == 0
    assert rows["direct_fail"]["status_code"] == 2 and rows["direct_fail"]["status_message"] == "KeyError: 7"
    for name in ("lone", "direct", f"cell {count[6]}", f"cell {count[7]}"):
        assert "glia.notebook.path" not in rows[name]["attributes"], name
        assert rows[name]["service_name"] == "ipykernel_launcher"  # nothing names the notebook: the kernel's script
    assert rows[f"cell {count[8]}"]["attributes"]["glia.notebook.path"] == vscode
    assert rows[f"cell {count[8]}"]["attributes"]["glia.notebook.cell_id"] == "5a1e3c2b-cell"
    assert "glia.notebook.cell_id" not in rows[f"cell {count[7]}"]["attributes"]
