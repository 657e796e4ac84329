"""Options declared once, as fields of a frozen config dataclass, read back as typed records.

A config dataclass documents each field with a docstring right below it and names its allowed values in the
field's metadata (``field(default=..., metadata={"choices": (...)})``). :func:`options_of` turns the fields into
:class:`Option` records (name, type, default, choices, help text from the docstring), from which the command line
is derived (``cli.py``) and the values are checked (:func:`check_choices`); nothing is spelled out twice.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import sys
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

from .errors import ConfigError


class Option(NamedTuple):
    """One user-settable field of a config dataclass."""

    name: str
    """The field name (``class_weight``); on the command line ``--class-weight``."""
    type: type
    """bool, int, float or str (``X | None`` fields: X, with ``optional``)."""
    default: object
    optional: bool
    """None is an allowed value (the default of ``X | None`` fields)."""
    choices: tuple | None
    """The allowed values, or None for any value of ``type``."""
    help: str
    """The field's docstring, without reST markup."""
    unit: str | None = None
    """``bytes`` for a size the command line accepts as e.g. 64MiB (field metadata ``{"bytes": True}``), ``json``
    for a JSON object (``{"json": True}``), ``count`` for a whole number also written like 1e6 (int fields)."""
    flag_name: str | None = None
    """The command-line flag when it is not the field name (field metadata ``{"flag": "--workers"}``)."""
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")


@functools.cache
def _class_defs(path: str) -> dict[str, ast.ClassDef]:
    """The top-level classes of a source file, parsed once (every CLI start reads these docstrings)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """Field name -> the docstring written below the field, for ``cls`` and its dataclass bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not hasattr(klass, "__dataclass_fields__"):
            continue
        path = getattr(sys.modules.get(klass.__module__), "__file__", None)
        node = _class_defs(path).get(klass.__qualname__) if path and path.endswith(".py") else None
        if node is None:  # pragma: no cover - source unavailable (frozen app) or a nested class
            continue
        for stmt, nxt in itertools.pairwise(node.body):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def _plain(text: str) -> str:
    return text.replace("``", "")


def options_of(cls, exclude=()) -> list[Option]:
    """The fields of dataclass ``cls`` (minus ``exclude``) as Option records, in declaration order."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        if f.name in exclude or not f.init:
            continue
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        choices = f.metadata.get("choices")
        unit = next((u for u in ("bytes", "json") if f.metadata.get(u)), "count" if base is int else None)
        out.append(Option(f.name, base, default, optional, tuple(choices) if choices else None,
                          _plain(docs.get(f.name, "")), unit, f.metadata.get("flag"), f.metadata.get("metavar")))
    return out


def check_choices(obj) -> None:
    """Raise ConfigError for a field of ``obj`` whose value is not one of its declared choices."""
    for f in fields(obj):
        choices = f.metadata.get("choices")
        if not choices:
            continue
        value = getattr(obj, f.name)
        if value is None and f.default is None:
            continue
        if value not in choices:
            hint = f"use one of {', '.join(map(str, choices))}" + (" or leave it out" if f.default is None else "")
            raise ConfigError(f.name, f"unknown value {value!r}", hint)


def check_count(name: str, value, least: int = 1, fix: str = "") -> None:
    """Refuse a value that is not a whole number >= ``least`` (an option that counts things)."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ConfigError(name, f"must be a whole number >= {least}, got {value!r}", fix or f"pass {least} or more")


@dataclass(frozen=True, kw_only=True)
class JobFlags:
    """The flags every stage's job takes, declared once (as hats-import's ``RuntimeArguments``): what happens to
    an existing output, what is shown, and how object stores are reached. Every stage config inherits them."""

    overwrite: bool = False
    """Replace the output if it is one astrodask wrote (its manifest present, nothing else inside); never
    anything else."""
    resume: bool = False
    """Continue an interrupted run into the output; if the output is complete and was made from the same inputs
    and options, succeed and change nothing."""
    quiet: bool = False
    """No progress bars or dashboard link."""
    storage_options: dict = field(default_factory=dict, hash=False, metadata={"json": True, "metavar": "JSON"})
    """fsspec options for URL inputs and outputs (s3://, gs://...), e.g. {"endpoint_url": "http://127.0.0.1:9000"}.
    A key that is a URL prefix holds options for the URLs below it, over the others: {"s3://public-bucket":
    {"anon": true}} reads that bucket anonymously and writes elsewhere with credentials. Credentials and the
    endpoint are also read from the usual places (AWS_* variables such as AWS_ENDPOINT_URL, ~/.aws, fsspec
    config)."""

    def check_flags(self) -> None:
        """Normalise and check the flags (called by every config's ``__post_init__``)."""
        if self.storage_options is None:
            object.__setattr__(self, "storage_options", {})
        if not isinstance(self.storage_options, dict):
            raise ConfigError("storage_options", f"must be a mapping, got {type(self.storage_options).__name__}",
                              'pass a JSON object such as {"anon": true}')

    def flags(self) -> dict:
        """The job flags alone (to pass on to another stage's config)."""
        return {f.name: getattr(self, f.name) for f in fields(JobFlags)}
