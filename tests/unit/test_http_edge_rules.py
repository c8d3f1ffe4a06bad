"""Pure parts of the HTTP edge: Host parsing and rules for every kind of bind address, the policy string, the
rate-limited log, and how GLIA_ALLOWED_HOSTS is read."""

from __future__ import annotations

import logging
import time

import pytest

from receiver.guard import _VERDICTS as VERDICTS
from receiver.guard import HostRule, content_security_policy, host_name, is_loopback
from receiver.ratelog import MAX_ADDRESSES, OTHERS, RateLimitedLog
from receiver.server import ConnectionShare
from receiver.settings import Settings


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:4318", "localhost"),
        ("LocalHost.", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:4318", "::1"),
        ("[::1]", "::1"),
        ("receiver:", "receiver"),
        ("Glia.Example.org:443", "glia.example.org"),
        ("[::1]x", None),
        ("[::1", None),
        ("host:port", None),
        ("", None),
    ],
)
def test_host_name(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_loopback_names() -> None:
    assert all(map(is_loopback, ["localhost", "127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "localhost.example", "128.0.0.1"]))


def test_a_loopback_bind_answers_only_to_loopback_names_and_its_list() -> None:
    rule = HostRule.make("127.0.0.1", [])
    assert not rule.open
    assert all(rule.allows(h) for h in ["localhost:4318", "127.0.0.1:4318", "127.9.9.9", "[::1]:80"])
    assert not any(rule.allows(h) for h in ["rebind.example:4318", "10.0.0.1", "", "[::1", None])
    listed = HostRule.make("::1", ["Glia.example.org.", " *.corp.example ", ""])
    assert listed.listed == ("glia.example.org", "*.corp.example")
    assert listed.allows("glia.example.org:4318") and listed.allows("a.b.corp.example")
    assert not listed.allows("corp.example") and not listed.allows("xcorp.example")
    assert HostRule.make("localhost", ["*"]).open


def test_another_bind_answers_to_any_host_unless_listed() -> None:
    assert HostRule.make("0.0.0.0", []).open and HostRule.make("::", []).allows(None)
    rule = HostRule.make("0.0.0.0", ["receiver"])
    assert not rule.open
    assert rule.allows("receiver:4318") and rule.allows("127.0.0.1:4318") and rule.allows("0.0.0.0")
    assert not rule.allows("scraper:4318")
    assert "receiver (GLIA_ALLOWED_HOSTS)" in rule.refusal("scraper:4318")
    bound = HostRule.make("192.0.2.7", ["lb.example"])
    assert bound.allows("192.0.2.7:4318") and not bound.allows("192.0.2.8")


def test_remembered_verdicts_stay_right_and_bounded() -> None:
    # each Host value's verdict is worked out once; a client sending a new name per request cannot grow the memory
    rule = HostRule.make("127.0.0.1", ["lb.example"])
    for i in range(3 * VERDICTS):
        assert not rule.allows(f"rebind{i}.example:4318")
        assert rule.allows("localhost:4318") and rule.allows("lb.example")
        assert len(rule._verdicts) <= VERDICTS
    assert not rule.allows("rebind0.example:4318") and rule.allows("127.0.0.1")


def test_allowed_hosts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIA_ALLOWED_HOSTS", "receiver, lb.example ,")
    assert Settings().allowed_hosts == ["receiver", "lb.example"]
    monkeypatch.setenv("GLIA_ALLOWED_HOSTS", "")  # what compose passes when .env leaves it empty
    assert Settings().allowed_hosts == []


def test_the_policy() -> None:
    policy = content_security_policy()
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert "script-src 'self' 'nonce-abc'" in content_security_policy(script_nonce="abc")


def test_rate_limited_log_one_line_per_address_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("glia.test.ratelog")
    limited = RateLimitedLog(logger, interval=0.2, what="refusals")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for _ in range(5):
            limited.warning("10.0.0.1", "refused %s", "a")
        limited.warning("10.0.0.2", "refused %s", "b")
        time.sleep(0.25)
        limited.warning("10.0.0.3", "refused %s", "c")  # anyone's next line reports what was left out
    assert [r.getMessage() for r in caplog.records] == [
        "refused a",
        "refused b",
        "10.0.0.1: 4 more refusals within 0.2 s (not logged one by one)",
        "refused c",
    ]


def test_rate_limited_log_is_bounded_in_addresses(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("glia.test.ratelog")
    limited = RateLimitedLog(logger, interval=60, what="refusals")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for i in range(MAX_ADDRESSES + 100):
            limited.warning(f"2001:db8::{i:x}", "refused %d", i)
    assert len(limited._windows) == MAX_ADDRESSES + 1 and OTHERS in limited._windows
    assert len(caplog.records) == MAX_ADDRESSES + 1


def test_a_worker_over_its_share_of_connections_says_so() -> None:
    share = ConnectionShare(2)  # the memory two forked workers would share; here both slots are ours to move
    for _ in range(3):
        share.add_at(0, 1)
    share.add_at(1, 1)
    share.index = 0
    assert share.over()  # 3 of 4: over the share of 2
    share.index = 1
    assert not share.over()
    share.add_at(0, -1)
    share.add(1)  # 2 and 2: balanced, nobody is asked to reconnect
    assert share.count_at(1) == 2 and not share.over()
    share.index = 0
    assert not share.over()
    share.add_at(1, -1)  # 2 and 1: a share of 2 rounded up, so none is over
    assert not share.over()
