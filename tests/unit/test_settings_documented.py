"""Every setting a user can give is in the settings table of its doc: the receiver's `GLIA_*` fields in
docs/receiver.md, the client's `GLIA_*` variables in docs/client.md."""

from __future__ import annotations

import re
from pathlib import Path

from receiver.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def table_names(doc: Path) -> set[str]:
    """The `GLIA_*` names in the first cell of the doc's table rows (`| `GLIA_A`, `GLIA_B` | ...`)."""
    names: set[str] = set()
    for line in doc.read_text().splitlines():
        if line.startswith("| `GLIA_"):
            names.update(re.findall(r"`(GLIA_[A-Z0-9_]+)`", line.split(" | ")[0]))
    return names


def test_every_receiver_setting_has_a_row_in_docs_receiver() -> None:
    fields = {f"GLIA_{name.upper()}" for name in Settings.model_fields}
    missing = fields - table_names(REPO / "docs" / "receiver.md")
    assert not missing, f"settings without a row in docs/receiver.md: {sorted(missing)}"


def test_every_client_variable_has_a_row_in_docs_client() -> None:
    source = (REPO / "glia_otel" / "_config.py").read_text()
    read = set(re.findall(r"""env(?:\.get\(|\[)["'](GLIA_[A-Z0-9_]+)["']""", source))
    assert {"GLIA_SPOOL_DIR", "GLIA_LIVE"} <= read, "the pattern no longer finds what _config.py reads"
    missing = read - table_names(REPO / "docs" / "client.md")
    assert not missing, f"client variables without a row in docs/client.md: {sorted(missing)}"
