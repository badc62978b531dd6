"""Checking a recipe section's keys and values against the classes that own them, before anything is loaded.

A section is flat YAML; its keys belong to classes: hf_ladder's own dataclasses (`hf_ladder.schema`) or a
library's (`TrainingArguments`, `SFTConfig`, `LoraConfig`, `BitsAndBytesConfig`, a transformers model config).
Each value is checked against its field's annotation with pydantic (`TypeAdapter`, lax mode: `3e-4` written as a
string becomes a float, `16.0` an int), bounds included (`Annotated[int, Ge(1)]`, and `schema.LIBRARY_BOUNDS` for
library keys). Every problem is collected, not raised: an unknown key gets the closest valid name, a wrong
type or an impossible value names its key.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import sys
import types
import typing
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError

from hf_ladder import schema

BAD = object()  # a value that failed its check: the field keeps its default, the error is recorded


def field_types(cls: type) -> dict[str, Any]:
    """A class's argument names -> annotations: the fields of a dataclass (transformers' configs and arguments,
    TRL's, peft's, ours) and the constructor's own parameters (BitsAndBytesConfig takes its arguments in
    `__init__`, not as fields)."""
    hints: dict[str, Any] = {}
    if dataclasses.is_dataclass(cls):
        resolved = _annotations(cls)
        hints = {f.name: resolved.get(f.name, Any) for f in dataclasses.fields(cls)
                 if f.init and not f.name.startswith("_")}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name not in ("self", "args", "kwargs") and name not in hints and param.kind is not param.VAR_KEYWORD:
            hints[name] = Any if param.annotation is inspect.Parameter.empty else param.annotation
    return hints


def _annotations(cls: type) -> dict[str, Any]:
    """A class's resolved annotations; where one does not resolve (transformers' configs name `torch` types imported
    only for type checkers), the others still do, field by field, and that one is Any (the library judges it)."""
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception:
        pass
    out = {}
    for klass in reversed(cls.__mro__):
        namespace = vars(sys.modules[klass.__module__]) if klass.__module__ in sys.modules else {}
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            try:
                out[name] = typing.get_type_hints(type("_", (), {"__annotations__": {name: annotation}}),
                                                  globalns=namespace, include_extras=True)[name]
            except Exception:
                out[name] = Any
    return out


def unknown(where: str, key: str, valid, what: str = "key") -> str:
    """The message for a key (or name) that is not one of `valid`, with the closest valid one."""
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{where}: unknown {what} {key!r}{hint}"


def check_value(where: str, value: Any, hint: Any, errors: list[str]) -> Any:
    """`value` converted to `hint` (a YAML scalar where a list is expected becomes a one-item list, as TRL's
    command line reads `loss_type: sigmoid`), or `BAD` with the problem appended to `errors`."""
    adapter = _adapter(hint)
    if adapter is None:
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError as e:
        if _wants_list(hint) and not isinstance(value, (list, tuple)):
            try:
                return adapter.validate_python([value])
            except ValidationError:
                pass
        errors.append(f"{where}: {_describe(e, hint, value)}")
        return BAD


def build(where: str, cls: type, section: Any, errors: list[str]):
    """An instance of one of hf_ladder's own dataclasses from a mapping (nested dataclasses too), every key and
    value checked; a section that is not a mapping, or is missing, gives the defaults."""
    if section is None:
        return cls()
    if not isinstance(section, dict):
        errors.append(f"{where}: expected a mapping, got {section!r}")
        return cls()
    hints = field_types(cls)
    kwargs = {}
    for key, value in section.items():
        if key not in hints:
            errors.append(unknown(f"{where}.{key}", key, hints))
            continue
        tp = hints[key]
        value = (build(f"{where}.{key}", tp, value, errors) if dataclasses.is_dataclass(tp)
                 else check_value(f"{where}.{key}", value, tp, errors))
        if value is not BAD:
            kwargs[key] = value
    return cls(**kwargs)


def split_section(where: str, section: dict, parts: dict[str, type], errors: list[str]) -> dict[str, Any]:
    """Split a flat stage section across `parts` (part name -> class; a key belongs to the first class that has
    it) and check every value. hf_ladder's own classes (`hf_ladder.schema`) come back built; a library's come back
    as the checked keyword arguments (the stage adds what the ladder sets, such as output_dir), after one
    construction that lets the library judge them."""
    keys = {name: field_types(cls) for name, cls in parts.items()}
    raw: dict[str, dict] = {name: {} for name in parts}
    for key, value in section.items():
        if key in schema.KEYS_SET_BY_LADDER or key in schema.KEYS_REFUSED:
            why = schema.KEYS_SET_BY_LADDER.get(key) or f"not accepted ({schema.KEYS_REFUSED[key]}); remove it"
            errors.append(f"{where}.{key}: {why}")
            continue
        owner = next((name for name in parts if key in keys[name]), None)
        if owner is None:
            errors.append(unknown(f"{where}.{key}", key, [k for name in parts for k in keys[name]]))
        else:
            raw[owner][key] = value
    out = {}
    for name, cls in parts.items():
        if cls.__module__ == schema.__name__:
            out[name] = build(where, cls, raw[name], errors)
            continue
        checked = {}
        for key, value in raw[name].items():
            hint = keys[name][key]
            if key in schema.LIBRARY_BOUNDS:
                hint = Annotated[hint, schema.LIBRARY_BOUNDS[key]]
            if (value := check_value(f"{where}.{key}", value, hint, errors)) is not BAD:
                checked[key] = value
        out[name] = checked
    return out


def library_rejects(where: str, cls: type, kwargs: dict, errors: list[str], **required) -> None:
    """Construct `cls(**required, **kwargs)` once so that the library judges the values itself (e.g. bf16 on a
    machine that cannot run it, an unknown scheduler name); its complaint is recorded with `where`."""
    try:
        cls(**required, **kwargs)
    except Exception as e:
        errors.append(f"{where}: {cls.__name__} rejects these values: {str(e).splitlines()[0]}")


# --------------------------------------------------------------------------------------------- internals


@cache
def _cached_adapter(hint: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # a typing construct pydantic cannot check: let the library judge the value
        return None


def _adapter(hint: Any) -> TypeAdapter | None:
    if hint is Any or hint is object:
        return None
    try:
        return _cached_adapter(hint)
    except TypeError:  # an unhashable annotation
        return _cached_adapter.__wrapped__(hint)


def _strip(tp: Any) -> Any:
    """The type under Annotated[...] and Optional[...]."""
    if typing.get_origin(tp) is Annotated:
        return _strip(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _strip(args[0]) if len(args) == 1 else tp
    return tp


def _wants_list(tp: Any) -> bool:
    tp = _strip(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_wants_list(a) for a in typing.get_args(tp))
    return typing.get_origin(tp) in (list, tuple, set) or tp in (list, tuple, set)


BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _describe(error: ValidationError, hint: Any, value: Any) -> str:
    """A bound that the value breaks, else the expected type: 'must be >= 1, got 0', 'expected int, got str ...'."""
    for e in error.errors():
        if e["type"] == "too_short":  # MinLen: a list or mapping with too few items
            return f"must have at least {e['ctx']['min_length']} item(s), got {value!r}"
        if e["type"] in BOUNDS:
            return f"must be {BOUNDS[e['type']]} {next(iter(e['ctx'].values()))}, got {e['input']!r}"
    return f"expected {type_name(hint)}, got {type(value).__name__} {value!r}"


def type_name(tp: Any) -> str:
    """A readable name of an annotation: 'int', 'str or null', "one of 'a', 'b'", 'list[str]'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(type_name(a) for a in args))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(type_name(a) for a in args)}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))
