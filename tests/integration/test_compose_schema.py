"""compose.yaml against the Compose Specification's JSON schema, after interpolating it with .env.example as
`docker compose` would.

The schema is not kept in the repo: it comes from a pinned npm package on first use (see `compose_schema`) and is
cached under .build/, which is why these tests sit in the integration tier and not beside tests/unit/test_compose.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import REPO, need
from tests.helpers import compose_config

# dclint ships the Compose Specification's schema (compose-spec.json) as schemas/compose.schema.json.
SCHEMA_PACKAGE = "dclint@3.1.0"
SCHEMA_MEMBER = "package/schemas/compose.schema.json"
SCHEMA_CACHE = REPO / ".build" / "compose-spec" / "compose.schema.json"


def _fetch_schema(dest: Path) -> None:
    """Download the pinned package with `npm pack` and keep only the schema file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["npm", "pack", SCHEMA_PACKAGE, "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        tarball = Path(tmp) / out.stdout.strip().splitlines()[-1]
        with tarfile.open(tarball) as tar:
            member = tar.extractfile(SCHEMA_MEMBER)
            assert member is not None, f"{SCHEMA_PACKAGE} has no {SCHEMA_MEMBER}"
            data = member.read()
    json.loads(data)  # a truncated download must not be cached
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(dest)


@pytest.fixture(scope="session")
def compose_schema() -> dict[str, Any]:
    """The Compose Specification JSON schema: $GLIA_COMPOSE_SCHEMA, else the cached copy, else from npm."""
    given = os.environ.get("GLIA_COMPOSE_SCHEMA")
    path = Path(given) if given else SCHEMA_CACHE
    if not path.is_file() and not given:
        need(shutil.which("npm"), f"npm is needed to fetch the Compose schema ({SCHEMA_PACKAGE})")
        try:
            _fetch_schema(path)
        except (subprocess.SubprocessError, OSError, KeyError) as exc:
            need(False, f"could not fetch the Compose schema from {SCHEMA_PACKAGE}: {exc}")
    need(path.is_file(), f"no Compose schema at {path}")
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def validator(schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    """A validator for the Compose schema: draft 7, though its $schema URL is not the canonical one."""
    assert "draft-07" in schema.get("$schema", ""), f"the Compose schema moved to {schema.get('$schema')}"
    return jsonschema.Draft7Validator(schema)


def test_compose_file_is_valid_against_the_compose_specification(compose_schema: dict[str, Any]) -> None:
    compose = compose_config()
    jsonschema.Draft7Validator.check_schema(compose_schema)
    errors = sorted(validator(compose_schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_check_catches_a_broken_file(compose_schema: dict[str, Any]) -> None:
    """The schema is the real one: a misspelt key and a wrong depends_on condition are rejected."""
    broken = compose_config()
    broken["services"]["receiver"]["helthcheck"] = {}
    broken["services"]["collector"]["depends_on"]["receiver"]["condition"] = "healthy"
    assert len(list(validator(compose_schema).iter_errors(broken))) >= 2
