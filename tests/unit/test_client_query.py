"""The API path's pure parts: when `glia runs` / `glia show` read the API, and what a refusal says."""

from __future__ import annotations

import pytest

from glia_otel._query import Api, ApiError, reads_api


@pytest.mark.parametrize(
    ("argv", "environ", "api"),
    [
        (["--limit", "3"], {"GLIA_API_URL": "http://h:4318"}, True),
        (["--limit", "3"], {}, False),
        (["--limit", "3"], {"GLIA_API_URL": "  "}, False),
        (["--database-url", "postgresql://x/y"], {"GLIA_API_URL": "http://h:4318"}, False),
        (["--database-url=postgresql://x/y"], {"GLIA_API_URL": "http://h:4318"}, False),
        (["--data-dir", "/srv/glia"], {"GLIA_API_URL": "http://h:4318"}, False),
        (["--attr", "x=1", "--", "--database-url"], {"GLIA_API_URL": "http://h:4318"}, True),
    ],
)
def test_an_option_naming_a_database_beats_glia_api_url(argv: list[str], environ: dict[str, str], api: bool) -> None:
    assert reads_api(argv, environ) is api


@pytest.mark.parametrize("url", ["ftp://h", "h:4318", "http://", "http://h:99999", ""])
def test_a_url_that_is_not_http_is_refused_with_exit_2(url: str) -> None:
    with pytest.raises(ApiError) as refused:
        Api(url, None)
    assert refused.value.code == 2 and "GLIA_API_URL" in str(refused.value)


def test_refusals_name_the_option_and_never_the_key() -> None:
    api = Api("http://h:4318/", "glia_secret")
    invalid = api.refused("/api/runs", 422, {"detail": [{"loc": ["query", "exit_code"], "msg": "not an int"}]})
    assert (str(invalid), invalid.code) == ("--exit-code: not an int", 2)
    sha = api.refused("/api/runs", 422, {"detail": [{"loc": ["query", "script_sha256"], "msg": "bad"}]})
    assert str(sha) == "--sha256: bad"
    for status in (401, 403):
        refused = api.refused("/api/runs", status, {"detail": "nope"})
        assert refused.code == 1 and "glia_secret" not in str(refused) and "GLIA_API_KEY" in str(refused)
    assert "needs a read key" in str(Api("http://h", None).refused("/api/runs", 401, {"detail": "x"}))
    busy = api.refused("/api/runs", 503, {"detail": "the database is busy\x1b[2J"})
    assert str(busy) == "the query API is unavailable (503): the database is busy\\x1b[2J"
    assert "http://h:4318/api/runs" in str(api.refused("/api/runs", 404, {"detail": "Not Found"}))
    assert "500" in str(api.refused("/api/runs", 500, None))
