"""compose.yaml and the files around it: the topology docs/deploy.md describes, the variables .env.example sets, the
image the Dockerfile builds.

There is no Docker engine to run the stack here: the same topology runs with real processes in the end-to-end tests,
and tests/integration/test_compose_schema.py checks the file against the Compose Specification's JSON schema.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.helpers import COMPOSE, COMPOSE_VARIABLE, ENV_EXAMPLE, compose_config, interpolate, read_env_file

MANIFEST = REPO / "collector-config" / "builder-config.yaml"


def variables(text: str) -> dict[str, str | None]:
    """Every variable compose.yaml interpolates, with its operator (None for a bare ${V})."""
    return {m.group("name"): m.group("op") for m in COMPOSE_VARIABLE.finditer(text) if m.group("name")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """compose.yaml as `docker compose` sees it with .env copied from .env.example."""
    return compose_config()


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose["services"]
    assert name in services, f"compose.yaml has no service {name!r}"
    return services[name]


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
