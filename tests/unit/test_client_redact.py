"""The redaction rule for command lines."""

from __future__ import annotations

import pytest

from glia_otel._redact import REDACTED, redact_args


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["app", "--password", "hunter2", "x"], ["app", "--password", REDACTED, "x"]),
        (["app", "--password=hunter2"], ["app", f"--password={REDACTED}"]),
        (
            ["app", "--db-password=p", "--token", "t", "--secret=s"],
            ["app", f"--db-password={REDACTED}", "--token", REDACTED, f"--secret={REDACTED}"],
        ),
        (
            ["app", "--api-key", "k", "--API_KEY=k", "-token", "t"],
            ["app", "--api-key", REDACTED, f"--API_KEY={REDACTED}", "-token", REDACTED],
        ),
        (
            ["env", "AWS_SECRET_ACCESS_KEY=abc", "MY_API_KEY=xyz", "GITHUB_TOKEN=t", "DB_PASSWORD=p"],
            [
                "env",
                f"AWS_SECRET_ACCESS_KEY={REDACTED}",
                f"MY_API_KEY={REDACTED}",
                f"GITHUB_TOKEN={REDACTED}",
                f"DB_PASSWORD={REDACTED}",
            ],
        ),
        (["psql", "postgresql://ada:s3cret@db/x"], ["psql", f"postgresql://ada:{REDACTED}@db/x"]),
        (
            ["app", "--threads", "4", "PATH=/bin", "--keyfile", "k.pem", "input.txt"],
            ["app", "--threads", "4", "PATH=/bin", "--keyfile", "k.pem", "input.txt"],
        ),
        (["app", "--", "--password"], ["app", "--", "--password"]),
        (["app", "--token"], ["app", "--token"]),
    ],
)
def test_redact_args(args: list[str], expected: list[str]) -> None:
    assert redact_args(args) == expected


def test_redaction_does_not_modify_its_input() -> None:
    args = ["x", "--password", "p"]
    redact_args(args)
    assert args == ["x", "--password", "p"]
