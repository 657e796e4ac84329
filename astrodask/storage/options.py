"""Storage options checked against what the filesystem accepts, on the client before anything starts.

fsspec filesystems take their options as keyword arguments, and s3fs hands the ones it does not know to
aiobotocore's session at the first request: a mistyped key (``endpoint`` for ``endpoint_url``) or a number as the
secret would fail there, deep in a worker. The accepted names are read from the ``__init__`` signatures along the
filesystem class's MRO (following ``**kwargs``); a chain that ends in ``**kwargs`` (file, memory, http) accepts
anything and is not checked.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json

from ..errors import AstrodaskError

FSSPEC_INSTANCE_KEYS = frozenset({"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths"})
"""Taken by fsspec itself (its instance cache and directory listings), whatever the filesystem."""
TEXT_KEYS = ("key", "secret", "token", "endpoint_url", "username", "password", "profile")
FLAG_KEYS = ("anon", "use_ssl", "requester_pays", "version_aware")
OBJECT_KEYS = ("client_kwargs", "config_kwargs", "s3_additional_kwargs")
_S3 = ("s3", "s3a")


@functools.lru_cache(maxsize=16)
def accepted(protocol: str) -> frozenset[str] | None:
    """The option names ``protocol``'s filesystem accepts, or None when it accepts any (or is not installed)."""
    import fsspec

    try:
        cls = fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError):
        return None
    names = set(FSSPEC_INSTANCE_KEYS)
    closed = False
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        try:
            params = list(inspect.signature(init).parameters.values())
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            closed = True
            break
    if protocol in _S3 and not closed:  # s3fs hands the rest to AioSession(**kwargs)
        try:
            from aiobotocore.session import AioSession
        except ImportError:
            return None
        names |= {p for p in inspect.signature(AioSession.__init__).parameters if p != "self"}
        closed = True
    return frozenset(names) if closed else None


@functools.lru_cache(maxsize=1)
def _botocore_keys() -> tuple[frozenset[str], frozenset[str]] | None:
    """(``client_kwargs`` names: botocore's ``create_client``; ``config_kwargs`` names: ``botocore.config.Config``)."""
    try:
        import botocore.config
        import botocore.session
    except ImportError:
        return None
    client = {p for p in inspect.signature(botocore.session.Session.create_client).parameters
              if p not in ("self", "service_name")}
    return frozenset(client), frozenset(botocore.config.Config.OPTION_DEFAULTS)


def _unknown(key: str, names, where: str) -> AstrodaskError:
    close = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    shown = ", ".join(sorted(names))
    return AstrodaskError(f"--storage-options: {key} is not {where}{hint}; it accepts {shown}")


def _shown(value) -> str:
    return json.dumps(value)[:40] if not isinstance(value, str) else repr(value[:40])


def check_storage_options(protocol: str, options: dict) -> None:
    """Refuse, in one line naming the key and the closest accepted one, an option ``protocol`` does not take, and
    a value of the wrong type (a number as the secret)."""
    protocol = protocol.lower()
    names = accepted(protocol)
    if names is None or not options:
        return
    for key, value in options.items():
        if not isinstance(key, str) or key not in names:
            raise _unknown(str(key), names, f"an option of {protocol}:// paths")
        secret = key in ("key", "secret", "token", "password")
        if key in TEXT_KEYS and value is not None and not isinstance(value, str):
            got = type(value).__name__ if secret else _shown(value)
            raise AstrodaskError(f"--storage-options: {key} must be a string (got {got}); quote it")
        if key in FLAG_KEYS and not isinstance(value, bool):
            raise AstrodaskError(f"--storage-options: {key} must be true or false (got {_shown(value)})")
        if key in OBJECT_KEYS and value is not None and not isinstance(value, dict):
            raise AstrodaskError(f"--storage-options: {key} must be a JSON object (got {_shown(value)})")
    boto = _botocore_keys() if protocol in _S3 else None
    if boto is None:
        return
    for key, known in (("client_kwargs", boto[0]), ("config_kwargs", boto[1])):
        for sub in options.get(key) or {}:
            if sub not in known:
                raise _unknown(str(sub), known, f"an option of {key}")
