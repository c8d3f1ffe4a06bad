"""The gateway layout, read statically: agent.yaml, haproxy.cfg and compose.yaml's gateway profile agree with one
another and with config.yaml. tests/e2e/test_gateway.py runs the same files as real processes."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.conftest import REPO
from tests.helpers import compose_config, interpolate

CONFIG_DIR = REPO / "collector-config"
HAPROXY = CONFIG_DIR / "haproxy.cfg"


def collector_configs() -> dict[str, dict[str, Any]]:
    return {
        path.name: yaml.safe_load(path.read_text())
        for path in sorted(CONFIG_DIR.glob("*.yaml"))
        if path.name != "builder-config.yaml"
    }


def test_every_collector_config_uses_the_otlp_http_name_not_its_deprecated_alias() -> None:
    configs = collector_configs()
    assert {"config.yaml", "agent.yaml"} <= configs.keys()
    for name, config in configs.items():
        exporters = config["exporters"]
        assert all(e.split("/")[0] == "otlp_http" for e in exporters), (name, list(exporters))
        assert "otlphttp" not in (CONFIG_DIR / name).read_text(), name


def test_agent_queues_on_disk_and_retries_forever_towards_the_gateway() -> None:
    agent, gateway = collector_configs()["agent.yaml"], collector_configs()["config.yaml"]
    # the same components as the gateway: the stock image and the built test collector both run it
    for kind in ("receivers", "processors", "exporters", "extensions"):
        assert {c.split("/")[0] for c in agent[kind]} == {c.split("/")[0] for c in gateway[kind]}, kind
    exporter = agent["exporters"]["otlp_http/gateway"]
    assert exporter["endpoint"].startswith("${env:GLIA_GATEWAY_ENDPOINT:-")
    assert exporter["retry_on_failure"]["max_elapsed_time"] == 0
    assert exporter["sending_queue"]["storage"] in agent["service"]["extensions"]
    assert exporter["compression"] == "gzip" and exporter["encoding"] == "proto"
    for pipeline in agent["service"]["pipelines"].values():
        assert pipeline["processors"][0] == "memory_limiter"
        assert pipeline["exporters"] == ["otlp_http/gateway"]
    # an agent listens for its own node's jobs only, unless told otherwise
    protocols = agent["receivers"]["otlp"]["protocols"]
    assert all(":-127.0.0.1:" in p["endpoint"] for p in protocols.values())


def haproxy_variables() -> dict[str, str]:
    """The "${NAME-default}" expansions of haproxy.cfg's settings (not its comments): name -> default."""
    settings = "\n".join(line for line in HAPROXY.read_text().splitlines() if not line.lstrip().startswith("#"))
    return dict(re.findall(r'"\$\{([A-Z0-9_]+)-([^}]*)\}"', settings))


def test_haproxy_checks_readyz_with_a_loopback_host_and_retries_elsewhere() -> None:
    text = HAPROXY.read_text()
    assert "http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost" in text
    assert "option redispatch" in text and "retry-on conn-failure empty-response" in text
    assert "option http-buffer-request" in text
    servers = re.findall(r"^\s*server (\S+) \"\$\{(GLIA_RECEIVER_\d)-", text, re.M)
    assert len(servers) >= 2


def test_compose_gateway_profile_puts_haproxy_in_front_of_two_receivers() -> None:
    services = compose_config()["services"]
    receiver, second, balancer = services["receiver"], services["receiver-2"], services["balancer"]
    assert "profiles" not in receiver
    assert second["profiles"] == ["gateway"] and balancer["profiles"] == ["gateway"]
    for key in ("command", "environment", "depends_on", "healthcheck", "image"):
        assert second[key] == receiver[key], key
    assert "build" not in second and "ports" not in second and "ports" not in balancer
    assert balancer["image"] == "haproxy:2.6"
    assert "./collector-config/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in balancer["volumes"]
    env = balancer["environment"]
    assert set(env) == set(haproxy_variables()) - {"GLIA_LB_MAXCONN"}
    upstreams = {v.split(":")[0] for k, v in env.items() if k.startswith("GLIA_RECEIVER_")}
    assert upstreams == {"receiver", "receiver-2"}
    assert balancer["depends_on"] == {name: {"condition": "service_healthy"} for name in upstreams}
    assert env["GLIA_LB_BIND"].endswith(":4318")


def test_collector_is_pointed_at_the_balancer_by_one_variable() -> None:
    text = (REPO / "compose.yaml").read_text()
    assert "GLIA_RECEIVER_ENDPOINT: ${GLIA_COLLECTOR_UPSTREAM:-http://receiver:4318}" in text
    env = {"POSTGRES_PASSWORD": "x", "GLIA_COLLECTOR_UPSTREAM": "http://balancer:4318"}
    config = yaml.safe_load(interpolate(text, env))
    assert config["services"]["collector"]["environment"]["GLIA_RECEIVER_ENDPOINT"] == "http://balancer:4318"
