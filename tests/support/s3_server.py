"""A real S3 protocol server for tests: moto's ``ThreadedMotoServer`` on 127.0.0.1, plus helpers.

Plain module (no pytest imports), so tests, fixtures and helper scripts can all use it::

    from s3_server import moto_server, create_bucket, s3_env

    with moto_server() as endpoint:            # "http://127.0.0.1:<free port>"
        bucket = create_bucket(endpoint)        # fresh, uniquely named
        subprocess.run([...], env=s3_env(endpoint))

What the server is: moto's S3 backend behind werkzeug, in a daemon thread of *this* process, state
in memory (lost on ``stop``). It speaks the real S3 REST protocol (SigV4, multipart uploads,
``If-None-Match``, ACLs, bucket policies), so s3fs / botocore / pyarrow talk to it exactly as to
AWS. Differences from AWS that matter here (all measured in ``tests/storage/test_s3_server.py``):

* signatures are not checked: any access key / secret is accepted;
* anonymous (unsigned) requests are only refused for GET/HEAD of an *existing private object*;
  anonymous listing and anonymous writes are allowed;
* anonymous HEAD is checked against a bucket policy as ``s3:HeadObject`` (AWS: ``s3:GetObject``),
  see ``public_read_policy``; new objects inherit the bucket's canned ACL (AWS: private);
* ``If-None-Match: *`` is a check-then-put without a lock (exactly one winner was observed in every
  race run here, but moto does not promise it; AWS does); ``DeleteObject`` honours ``If-Match: <ETag>``
  (412 otherwise), as AWS does;
* in a *versioned* bucket, a prefix whose keys were all deleted (only delete markers left) is still
  listed as a CommonPrefix (AWS lists only current objects), so a directory walk meets "directories"
  whose ``info`` is FileNotFoundError.

Starting takes ~0.2 s (import of moto's server) + ~1 ms (bind); the first S3 request ~0.1 s more
(lazy backend load); ``stop()`` takes ~0.5 s (werkzeug's poll interval). Nothing but 127.0.0.1 is
contacted as long as clients get ``storage_options()`` / ``s3_env()`` from here.

moto[server] and s3fs are not in the project's ``[test]`` extra. Importing this module needs neither
(they are imported inside the functions); tests using it should ``pytest.importorskip("moto.server")``
and ``pytest.importorskip("s3fs")``, or use the fixtures in ``s3_fixtures``, which skip by themselves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping

HOST = "127.0.0.1"
REGION = "us-east-1"  # moto's default; buckets here need no LocationConstraint
ACCESS_KEY = "testing"
SECRET_KEY = "testing"

# Variables that would make botocore/s3fs/pyarrow use something other than what s3_env() says:
# another profile or credentials source, an STS/SSO role, a per-service endpoint, or ignoring ours.
AWS_VARS_TO_DROP = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ENDPOINT_URL_S3",  # beats AWS_ENDPOINT_URL for s3
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",  # would make botocore ignore AWS_ENDPOINT_URL
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_S3_DISABLE_MULTIREGION_ACCESS_POINTS",
    "AWS_SDK_LOAD_CONFIG",
)


def _free_endpoint(server) -> str:
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}"


def start_moto_server(quiet: bool = True):
    """Start moto's S3 (all services, really) on 127.0.0.1 and a free port.

    Returns ``(endpoint_url, server)``; call ``server.stop()`` when done (or use ``moto_server()``).
    ``quiet`` silences werkzeug's one-line-per-request access log.
    """
    from moto.server import ThreadedMotoServer

    if quiet:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()  # returns once the socket is bound and listening
    return _free_endpoint(server), server


@contextlib.contextmanager
def moto_server(quiet: bool = True) -> Iterator[str]:
    """Context manager: a running server, yielding its endpoint URL ``http://127.0.0.1:<port>``."""
    endpoint, server = start_moto_server(quiet=quiet)
    try:
        yield endpoint
    finally:
        server.stop()


def reset_server(endpoint: str) -> None:
    """Drop every bucket and object (moto's ``POST /moto-api/reset``)."""
    req = urllib.request.Request(f"{endpoint}/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


# ------------------------------------------------------------------------------------------ environment


def s3_env(endpoint: str, base: Mapping[str, str] | None = None, *, with_endpoint: bool = True) -> dict[str, str]:
    """The environment for a subprocess (or a dask worker) that must use this server and nothing else.

    ``base`` defaults to ``os.environ``. Sets the endpoint, dummy credentials and region; points
    ``AWS_CONFIG_FILE`` / ``AWS_SHARED_CREDENTIALS_FILE`` at ``/dev/null`` so ``~/.aws`` is never read;
    disables the EC2 instance-metadata lookup (169.254.169.254); drops every variable that selects
    another profile, role, endpoint or credentials source; adds 127.0.0.1 to ``NO_PROXY``.
    ``with_endpoint=False`` leaves ``AWS_ENDPOINT_URL`` out (to test explicit ``endpoint_url=``).
    """
    env = dict(os.environ if base is None else base)
    for name in AWS_VARS_TO_DROP:
        env.pop(name, None)
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    if with_endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    else:
        env.pop("AWS_ENDPOINT_URL", None)
    no_proxy = [p for p in env.get("NO_PROXY", env.get("no_proxy", "")).split(",") if p]
    for h in (HOST, "localhost"):
        if h not in no_proxy:
            no_proxy.append(h)
    env["NO_PROXY"] = env["no_proxy"] = ",".join(no_proxy)
    return env


def env_changes(endpoint: str, **kw) -> tuple[dict[str, str], list[str]]:
    """``(to_set, to_delete)``: what ``s3_env`` changes relative to ``os.environ`` (for monkeypatch)."""
    new = s3_env(endpoint, **kw)
    to_set = {k: v for k, v in new.items() if os.environ.get(k) != v}
    to_delete = [k for k in os.environ if k not in new]
    return to_set, to_delete


def storage_options(endpoint: str, **extra) -> dict:
    """fsspec/s3fs/dask ``storage_options`` that need no environment at all (picklable; safe to ship
    to dask workers): explicit endpoint, credentials and region."""
    opts = {
        "endpoint_url": endpoint,
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "client_kwargs": {"region_name": REGION},
    }
    opts.update(extra)
    return opts


def make_fs(endpoint: str, **extra):
    """A fresh ``s3fs.S3FileSystem`` on this server (``skip_instance_cache=True``: its own listing cache)."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **storage_options(endpoint, **extra))


# ------------------------------------------------------------------------------------------ sync client


def boto_client(endpoint: str, *, anon: bool = False):
    """A synchronous botocore S3 client on this server that reads neither env credentials nor ~/.aws.
    ``anon=True``: requests are unsigned (no Authorization header), like ``s3fs`` with ``anon=True``."""
    import botocore
    import botocore.session
    from botocore.config import Config

    session = botocore.session.Session(
        session_vars={
            # name: (config-file key, env var(s), default, converter) -- None = not looked up
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )
    return session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            **({"signature_version": botocore.UNSIGNED} if anon else {}),
        ),
    )


def new_bucket_name(prefix: str = "test") -> str:
    """A valid, unique bucket name (3-63 chars, lowercase, digits, hyphens)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"[:63]


def create_bucket(endpoint: str, name: str | None = None, *, client=None, **kwargs) -> str:
    """Create a bucket (unique name unless given) and return its name. ``kwargs`` go to CreateBucket
    (e.g. ``ACL="public-read"``, ``ObjectLockEnabledForBucket=True``)."""
    name = name or new_bucket_name()
    (client or boto_client(endpoint)).create_bucket(Bucket=name, **kwargs)
    return name


def public_read_policy(bucket: str, prefix: str = "", *, moto_head_object: bool = True) -> str:
    """A bucket policy letting anyone ``s3:GetObject`` under ``prefix``.

    moto evaluates an anonymous HEAD against the action ``s3:HeadObject`` (AWS uses ``s3:GetObject``
    for HEAD too, and rejects ``s3:HeadObject`` as an invalid action). s3fs HEADs before every
    read (``cat`` sizes the object first, ``open`` calls ``info``), so with ``s3:GetObject`` alone
    every anonymous s3fs read gets PermissionError on moto. ``moto_head_object=True`` (default) adds
    ``s3:HeadObject``; pass False for a policy AWS would accept.
    """
    actions = ["s3:GetObject"] + (["s3:HeadObject"] if moto_head_object else [])
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "PublicRead",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": actions,
                    "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"],
                }
            ],
        }
    )


def set_public_read_policy(
    endpoint: str, bucket: str, prefix: str = "", *, client=None, moto_head_object: bool = True
) -> None:
    """Make every object under ``prefix`` anonymously readable, by bucket policy (see ``public_read_policy``)."""
    policy = public_read_policy(bucket, prefix, moto_head_object=moto_head_object)
    (client or boto_client(endpoint)).put_bucket_policy(Bucket=bucket, Policy=policy)


def set_object_acl(endpoint: str, bucket: str, key: str, acl: str = "public-read", *, client=None) -> None:
    """Put a canned ACL on one existing object (``public-read`` makes it anonymously readable)."""
    (client or boto_client(endpoint)).put_object_acl(Bucket=bucket, Key=key, ACL=acl)


def list_keys(endpoint: str, bucket: str, prefix: str = "", *, client=None) -> list[str]:
    """Every key under ``prefix``, straight from the server (no s3fs cache)."""
    c = client or boto_client(endpoint)
    keys: list[str] = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def list_multipart_uploads(endpoint: str, bucket: str, *, client=None) -> list[dict]:
    """In-progress (never completed, never aborted) multipart uploads: ``[{"Key", "UploadId", ...}]``."""
    c = client or boto_client(endpoint)
    return c.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def delete_bucket(endpoint: str, bucket: str, *, client=None) -> None:
    """Abort pending uploads, delete every object, then the bucket (best effort for teardown)."""
    c = client or boto_client(endpoint)
    for up in list_multipart_uploads(endpoint, bucket, client=c):
        c.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    keys = list_keys(endpoint, bucket, client=c)
    for i in range(0, len(keys), 1000):
        c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True})
    c.delete_bucket(Bucket=bucket)


def wait_for_key(endpoint: str, bucket: str, key: str, timeout: float = 10.0, *, client=None) -> bool:
    """Poll HEAD until ``key`` exists (True) or ``timeout`` passes (False)."""
    c = client or boto_client(endpoint)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c.head_object(Bucket=bucket, Key=key)
            return True
        except c.exceptions.ClientError:
            time.sleep(0.05)
    return False
