"""Database URLs as glia prints them: masked passwords, refused malformed URLs, redacted error messages."""

from __future__ import annotations

import pytest

from receiver.dburl import check, masked, redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://glia:s3cret@127.0.0.1:5432/glia", "postgresql://glia:***@127.0.0.1:5432/glia"),
        ("postgresql://glia@db/glia", "postgresql://glia@db/glia"),
        ("postgresql://db/glia", "postgresql://db/glia"),
        ("postgresql://glia:@db/glia", "postgresql://glia:***@db/glia"),
        # unencoded '@' and '/' in the password: the whole user info up to the last '@' is masked
        ("postgresql://u:p@ss/wo:rd@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgresql://u@db/x?password=s3cret&sslmode=require", "postgresql://u@db/x?password=***&sslmode=require"),
        ("postgresql://u@db/x?sslmode=require&sslpassword=k3y", "postgresql://u@db/x?sslmode=require&sslpassword=***"),
    ],
)
def test_masked_hides_every_password(url: str, shown: str) -> None:
    assert masked(url) == shown


def test_redact_removes_the_password_and_the_pieces_a_parser_reports() -> None:
    url = "postgresql://glia:pw-0a1b2c3d/e4f5%40a6b7@127.0.0.1:5432/glia"
    text = f"invalid literal for int() with base 10: 'pw-0a1b2c3d'; tried {url}; decoded e4f5@a6b7"
    out = redact(text, url)
    assert "0a1b2c3d" not in out and "e4f5" not in out and "a6b7" not in out
    assert "postgresql://glia:***@127.0.0.1:5432/glia" in out
    assert redact("nothing secret", None) == "nothing secret"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://u:s3cret@db/x", "must start with postgresql://"),
        ("postgresql://u:s3/cret@db/x", "percent-encoded"),
        ("postgresql://u:s3cret@db:99999/x", "port 99999 is out of range"),
        ("postgresql://u:s3cret@db:abc/x", "port 'abc' is not a number"),
        ("postgresql://u:s3cret@db1:5432,db2:0/x", "port 0 is out of range"),
    ],
)
def test_check_refuses_malformed_urls_without_naming_the_password(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as info:
        check(url)
    assert "s3" not in str(info.value) and "cret" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://glia:s3cret@127.0.0.1:5432/glia",
        "postgres://db/glia",
        "postgresql://u:p%2Fw@[::1]:5433/x?sslmode=disable",
        "postgresql://u@db1:5432,db2/x",
        "postgresql:///glia",
    ],
)
def test_check_accepts_good_urls(url: str) -> None:
    check(url)
