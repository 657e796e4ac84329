"""pytest fixtures for a real S3 protocol server (moto) on 127.0.0.1.

``tests/conftest.py`` loads them for every test module (``pytest_plugins = ["support.s3_fixtures"]``); this
module imports neither moto nor s3fs, and the ``s3_server`` fixture skips the test when they are missing. In a
test module that also wants the helpers, ``from support import s3_server as s3h``: the fixture named
``s3_server`` would otherwise shadow the module's name.

Fixtures:

* ``s3_server`` (session): one server for the whole run; an ``S3Server`` with ``.endpoint``,
  ``.env()``, ``.storage_options()``, ``.fs()``, ``.client``. It does **not** touch ``os.environ``.
* ``s3_bucket`` (function): a fresh, uniquely named, empty bucket; deleted (objects and pending
  multipart uploads too) after the test. An ``S3Bucket``: ``.name``, ``.url(key)`` ->
  ``"s3://name/key"``, ``.path(key)`` -> ``"name/key"``, ``.fs`` (a fresh s3fs instance with its own
  listing cache), ``.storage_options``, ``.env()``, ``.keys()``, ``.uploads()``, ``.client``.
* ``s3_env`` (function): puts ``s3_env(endpoint)`` into ``os.environ`` for the test (monkeypatch),
  so in-process code *and processes started during the test* (subprocesses, LocalCluster workers)
  find the server through ``AWS_ENDPOINT_URL`` alone. Returns the endpoint.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import pytest

from . import s3_server as _s3


@dataclass
class S3Server:
    endpoint: str
    server: object = field(repr=False)
    client: object = field(repr=False)

    def env(self, base=None, **kw) -> dict[str, str]:
        """Environment for a subprocess using this server (see ``s3_server.s3_env``)."""
        return _s3.s3_env(self.endpoint, base, **kw)

    def storage_options(self, **extra) -> dict:
        return _s3.storage_options(self.endpoint, **extra)

    def fs(self, **extra):
        """A fresh s3fs filesystem (not shared through fsspec's instance cache)."""
        return _s3.make_fs(self.endpoint, **extra)

    def reset(self) -> None:
        _s3.reset_server(self.endpoint)


@dataclass
class S3Bucket:
    name: str
    server: S3Server
    fs: object = field(repr=False)

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def client(self):
        return self.server.client

    @property
    def storage_options(self) -> dict:
        return self.server.storage_options()

    def url(self, key: str = "") -> str:
        return f"s3://{self.name}/{key}"

    def path(self, key: str = "") -> str:
        return f"{self.name}/{key}"

    def env(self, base=None, **kw) -> dict[str, str]:
        return self.server.env(base, **kw)

    def keys(self, prefix: str = "") -> list[str]:
        """Keys as the server has them now (bypasses every s3fs cache)."""
        return _s3.list_keys(self.endpoint, self.name, prefix, client=self.client)

    def uploads(self) -> list[dict]:
        """Pending multipart uploads in this bucket."""
        return _s3.list_multipart_uploads(self.endpoint, self.name, client=self.client)


@pytest.fixture(scope="session")
def s3_server():
    pytest.importorskip("moto.server", reason="needs moto[server] (pip install -e '.[test]')")
    pytest.importorskip("s3fs", reason="needs s3fs (pip install -e '.[test]')")
    endpoint, server = _s3.start_moto_server()
    try:
        yield S3Server(endpoint=endpoint, server=server, client=_s3.boto_client(endpoint))
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    name = _s3.create_bucket(s3_server.endpoint, client=s3_server.client)
    try:
        yield S3Bucket(name=name, server=s3_server, fs=s3_server.fs())
    finally:
        try:
            _s3.delete_bucket(s3_server.endpoint, name, client=s3_server.client)
        except Exception as e:  # noqa: BLE001  (best effort: warn, do not fail the test)
            warnings.warn(f"could not delete test bucket {name}: {e!r}", stacklevel=1)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    to_set, to_delete = _s3.env_changes(s3_server.endpoint)
    for k in to_delete:
        monkeypatch.delenv(k, raising=False)
    for k, v in to_set.items():
        monkeypatch.setenv(k, v)
    return s3_server.endpoint
