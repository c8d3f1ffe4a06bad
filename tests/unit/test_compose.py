"""compose.yaml and the files around it: valid Compose, and the topology docs/deploy.md describes.

There is no Docker engine to run the stack here, so the file is checked against the Compose Specification's
JSON schema (after interpolating it with .env.example, as `docker compose` would), and the same topology runs
with real processes in the end-to-end tests. The schema is not kept in the repo: it comes from a pinned npm
package on first use (see `compose_schema`) and is cached under .build/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import REPO, need

COMPOSE = REPO / "compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
MANIFEST = REPO / "collector-config" / "builder-config.yaml"

# dclint ships the Compose Specification's schema (compose-spec.json) as schemas/compose.schema.json.
SCHEMA_PACKAGE = "dclint@3.1.0"
SCHEMA_MEMBER = "package/schemas/compose.schema.json"
SCHEMA_CACHE = REPO / ".build" / "compose-spec" / "compose.schema.json"

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


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


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines skipped)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ${V}, ${V:-default}, ${V-default}, ${V:?error}, ${V?error}, $$."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        if op in ("?", ":?"):
            raise ValueError(f"required variable {name} is not set: {arg}")
        if op in ("-", ":-"):
            return arg
        return ""

    return _VARIABLE.sub(substitute, text)


def variables(text: str) -> dict[str, str | None]:
    """Every variable compose.yaml interpolates, with its operator (None for a bare ${V})."""
    return {m.group("name"): m.group("op") for m in _VARIABLE.finditer(text) if m.group("name")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """compose.yaml as `docker compose` sees it with .env copied from .env.example."""
    data: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text(), read_env_file(ENV_EXAMPLE)))
    return data


def validator(schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    """A validator for the Compose schema: draft 7, though its $schema URL is not the canonical one."""
    assert "draft-07" in schema.get("$schema", ""), f"the Compose schema moved to {schema.get('$schema')}"
    return jsonschema.Draft7Validator(schema)


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose["services"]
    assert name in services, f"compose.yaml has no service {name!r}"
    return services[name]


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any], compose_schema: dict[str, Any]
) -> None:
    jsonschema.Draft7Validator.check_schema(compose_schema)
    errors = sorted(validator(compose_schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_check_catches_a_broken_file(compose: dict[str, Any], compose_schema: dict[str, Any]) -> None:
    """The schema is the real one: a misspelt key and a wrong depends_on condition are rejected."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["receiver"]["helthcheck"] = {}
    broken["services"]["collector"]["depends_on"]["receiver"]["condition"] = "healthy"
    assert len(list(validator(compose_schema).iter_errors(broken))) >= 2


def test_env_example_sets_every_required_variable_and_only_used_ones() -> None:
    used = variables(COMPOSE.read_text())
    example = read_env_file(ENV_EXAMPLE)
    required = {name for name, op in used.items() if op in (None, "?", ":?")}
    assert required <= example.keys(), f"missing from .env.example: {sorted(required - example.keys())}"
    assert example.keys() <= used.keys(), f"unused in compose.yaml: {sorted(example.keys() - used.keys())}"
    # Without the password, compose must refuse to start rather than run PostgreSQL with a blank one.
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        interpolate(COMPOSE.read_text(), {k: v for k, v in example.items() if k != "POSTGRES_PASSWORD"})


def test_only_the_collector_otlp_ports_are_published(compose: dict[str, Any]) -> None:
    published = {name: svc.get("ports", []) for name, svc in compose["services"].items() if svc.get("ports")}
    assert published == {"collector": ["4317:4317", "4318:4318"]}


def test_postgres_keeps_its_data_in_a_named_volume_and_has_a_health_check(compose: dict[str, Any]) -> None:
    postgres = service(compose, "postgres")
    assert postgres["image"] == "postgres:16"
    assert "pgdata:/var/lib/postgresql/data" in postgres["volumes"]
    assert "pgdata" in compose["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["environment"]["POSTGRES_PASSWORD"] == read_env_file(ENV_EXAMPLE)["POSTGRES_PASSWORD"]


def test_receiver_starts_after_a_one_shot_migration(compose: dict[str, Any]) -> None:
    migrate, receiver = service(compose, "migrate"), service(compose, "receiver")
    assert migrate["command"][:2] == ["glia", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert receiver["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert receiver["command"][:2] == ["glia", "serve"]
    assert migrate["environment"]["GLIA_DATABASE_URL"] == receiver["environment"]["GLIA_DATABASE_URL"]
    assert "@postgres:5432/" in receiver["environment"]["GLIA_DATABASE_URL"]
    for svc in (migrate, receiver):
        assert svc["build"] == "." and svc["image"] == migrate["image"], "both run the image of ./Dockerfile"


def test_receiver_health_check_asks_readyz(compose: dict[str, Any]) -> None:
    check = service(compose, "receiver")["healthcheck"]
    assert "http://127.0.0.1:4318/readyz" in " ".join(check["test"])


def test_collector_runs_the_stock_image_at_the_manifest_version(compose: dict[str, Any]) -> None:
    collector = service(compose, "collector")
    release = yaml.safe_load(MANIFEST.read_text())["dist"]["version"]
    assert collector["image"] == f"otel/opentelemetry-collector-contrib:{release}"
    assert "./collector-config/config.yaml:/etc/glia/collector.yaml:ro" in collector["volumes"]
    assert collector["command"] == ["--config=/etc/glia/collector.yaml"]
    assert collector["depends_on"]["receiver"] == {"condition": "service_healthy"}
    assert collector["environment"]["GLIA_RECEIVER_ENDPOINT"] == "http://receiver:4318"
    queue_dir = collector["environment"]["GLIA_COLLECTOR_QUEUE_DIR"]
    assert f"collector-queue:{queue_dir}" in collector["volumes"]
    assert "collector-queue" in compose["volumes"]
    # The stock image runs as uid 10001; a new named volume is root's until the init service hands it on.
    init = service(compose, "collector-queue-init")
    assert f"collector-queue:{queue_dir}" in init["volumes"]
    assert init["command"] == ["chown", "-R", "10001:10001", queue_dir]
    assert collector["depends_on"]["collector-queue-init"] == {"condition": "service_completed_successfully"}


def test_manifest_pins_one_collector_release() -> None:
    """Every component module is at dist.version, so the binary matches the image tag in compose.yaml."""
    manifest = yaml.safe_load(MANIFEST.read_text())
    release = "v" + manifest["dist"]["version"]
    for kind in ("receivers", "processors", "exporters", "extensions"):
        for module in manifest.get(kind, []):
            path, version = module["gomod"].split()
            assert version == release, f"{path} is at {version}, not {release}"


def _final_stage(dockerfile: str) -> list[str]:
    lines = [ln.strip() for ln in dockerfile.replace("\\\n", " ").splitlines() if ln.strip()]
    starts = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    return lines[starts[-1] :]


def test_dockerfile_builds_with_uv_and_runs_as_a_non_root_user() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "uv sync --locked --no-dev" in dockerfile
    final = _final_stage(dockerfile)
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the receiver image must not run as root"
    assert any(ln.upper().startswith("HEALTHCHECK") and "/readyz" in ln for ln in final)


def test_docker_context_holds_every_package_the_wheel_needs() -> None:
    """A package added to the wheel must also be copied into the image (and let through .dockerignore)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    dockerfile = (REPO / "Dockerfile").read_text()
    allowed = (REPO / ".dockerignore").read_text().splitlines()
    readme = pyproject["project"]["readme"]
    for name in [*packages, readme, "pyproject.toml", "uv.lock"]:
        copied = re.search(rf"^COPY .*\b{re.escape(name)}\b", dockerfile, re.M)
        assert copied, f"Dockerfile does not copy {name}"
        assert f"!{name}" in allowed or f"!{name}/" in allowed, f".dockerignore leaves out {name}"
