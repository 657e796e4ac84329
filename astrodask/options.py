"""Options declared once, as fields of a frozen config dataclass, read back as typed records.

A config dataclass documents each field with a docstring right below it and names its allowed values in the
field's metadata (``field(default=..., metadata={"choices": (...)})``). :func:`options_of` turns the fields into
:class:`Option` records (name, type, default, choices, help text from the docstring), from which the command line
is derived (``cli.py``) and the values are checked (:func:`check_choices`); nothing is spelled out twice.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from dataclasses import MISSING, fields
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
    """``bytes`` for a size the command line accepts as e.g. 64MiB (field metadata ``{"bytes": True}``)."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def field_docs(cls) -> dict[str, str]:
    """Field name -> the docstring written below the field, for ``cls`` and its dataclass bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not hasattr(klass, "__dataclass_fields__"):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # pragma: no cover - source unavailable (frozen app)
            continue
        body = tree.body[0].body
        for stmt, nxt in zip(body, body[1:]):
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
        out.append(Option(f.name, base, default, optional, tuple(choices) if choices else None,
                          _plain(docs.get(f.name, "")), "bytes" if f.metadata.get("bytes") else None))
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
