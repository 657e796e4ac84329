"""--storage-options checked on the client against what the filesystem accepts (the issue's I2): one line naming
the key and the closest accepted one, or the value of the wrong type, before anything connects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astrodask.errors import AstrodaskError
from astrodask.storage import Location
from astrodask.storage.options import accepted

GOOD = Path(__file__).resolve().parents[1] / "data" / "bad" / "good.csv"


@pytest.mark.parametrize("so, words", [
    ({"endpoint": "http://127.0.0.1:9"}, "endpoint is not an option of s3:// paths (did you mean endpoint_url?)"),
    ({"endpoint_url": "http://127.0.0.1:9", "bogus_option": 1}, "bogus_option is not an option of s3:// paths;"),
    ({"s3://bucket": {"anonn": True}}, "anonn is not an option of s3:// paths (did you mean anon?)"),
    ({"secret_key": "s"}, "(did you mean secret?)"),
    ({"key": 123, "secret": 456}, "key must be a string (got int)"),
    ({"key": "k", "secret": 456}, "secret must be a string (got int)"),
    ({"anon": "yes"}, "anon must be true or false (got 'yes')"),
    ({"client_kwargs": "eu-west-1"}, "client_kwargs must be a JSON object"),
    ({"client_kwargs": {"region": "eu-west-1"}}, "region is not an option of client_kwargs (did you mean region_name?)"),
    ({"config_kwargs": {"read_timout": 5}}, "read_timout is not an option of config_kwargs (did you mean read_timeout?)"),
], ids=["endpoint", "unknown", "per-url", "secret_key", "int-key", "int-secret", "anon-text", "client-text",
        "client-key", "config-key"])
def test_wrong_s3_options_are_refused_naming_the_key(so, words):
    with pytest.raises(AstrodaskError) as err:
        Location.of("s3://bucket/data.csv", so)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert "456" not in str(err.value)  # a secret is never shown


def test_accepted_s3_options_and_open_ended_filesystems_pass():
    so = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s", "anon": False, "use_listings_cache": False,
          "client_kwargs": {"region_name": "us-east-1"}, "config_kwargs": {"read_timeout": 5, "retries": {}}}
    assert Location.of("s3://bucket/x", so).options == so
    assert {"anon", "endpoint_url", "key", "secret", "profile", "skip_instance_cache"} <= accepted("s3")
    # file, memory and http take **kwargs all the way down: anything goes (local paths ignore the options)
    assert accepted("memory") is None and accepted("http") is None
    assert Location.of("memory://b/x", {"anything": 1}).options == {"anything": 1}
    assert Location.of(GOOD, {"endpoint": "x"}).options == {}


def test_the_cli_says_it_in_one_line_before_connecting(tmp_path):
    from support.cli import one_line_error, run_cli

    so = json.dumps({"endpoint": "http://127.0.0.1:9", "key": "k", "secret": "s"})
    line = one_line_error(run_cli("convert", GOOD, "s3://bucket/ds", "--storage-options", so, "--workers", "1", "-q"))
    assert "endpoint is not an option of s3:// paths (did you mean endpoint_url?)" in line, line
    line = one_line_error(run_cli("convert", "s3://bucket/in/good.csv", tmp_path / "ds", "--storage-options",
                                  json.dumps({"anonn": True}), "--workers", "1", "-q"))
    assert "anonn is not an option of s3:// paths (did you mean anon?)" in line, line
    assert not (tmp_path / "ds").exists()
