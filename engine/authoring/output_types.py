"""Typed outputs: an asset's return annotation, checked against the value it returned.

Types are for shape (`-> pd.DataFrame`, `-> dict[str, float]`, `-> Report`); checks stay the
tool for data-quality rules. A class is checked with isinstance (a generic such as
`dict[str, int]` by its origin, `dict`: the items are not walked), `X | None` by its arms, a
dataclass by isinstance, and a pydantic model by isinstance or, when the value is a dict, by
validating it (the stored value stays the dict). Anything else (TypeVars, protocols that are
not runtime-checkable, strings that cannot be resolved) is not checked.

The worker imports this module before every asset step, so it stays cheap: stdlib only, and
pydantic is reached through `sys.modules` when (and only when) the annotation is a model of it.
"""

from __future__ import annotations

import logging
import sys
import types
import typing
from typing import Any, Protocol, TypeGuard

# PEP 484's numeric tower: an int is a fine float. numbers' ABCs also admit numpy scalars.
_NUMERIC = {float: "Real", int: "Integral", complex: "Complex"}


class OutputTypeError(TypeError):
    """An asset returned a value that does not match its return annotation."""


def return_annotation(fn: Any, what: str, log: logging.Logger | None = None) -> Any:
    """The resolved return annotation of `fn`, or None when it has none or cannot be resolved
    (a name imported only under TYPE_CHECKING or inside the function): then a warning is
    logged and the value goes unchecked."""
    annotations = getattr(fn, "__annotations__", None) or {}
    if "return" not in annotations:
        return None
    raw = annotations["return"]
    # Resolve the return annotation alone, so an unresolvable parameter annotation does not
    # cost the check of the return type.
    holder = types.SimpleNamespace(
        __annotations__={"return": raw}, __globals__=getattr(fn, "__globals__", {})
    )
    try:
        return typing.get_type_hints(holder).get("return")
    except Exception as exc:  # noqa: BLE001 - NameError, SyntaxError, TypeError from user text
        if log is not None:
            log.warning(
                "the return type of %s (%r) cannot be resolved, so it is not checked: %s: %s",
                what,
                raw,
                type(exc).__name__,
                exc,
            )
        return None


def type_name(tp: Any) -> str:
    """How a type reads in a message: `DataFrame`, `dict[str, int]`, `Report | None`."""
    if tp is None or tp is type(None):
        return "None"
    if tp is Ellipsis:
        return "..."
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        return (
            f"{type_name(origin)}[{', '.join(type_name(a) for a in args)}]"
            if args
            else (type_name(origin))
        )
    return getattr(tp, "__qualname__", None) or getattr(tp, "__name__", None) or repr(tp)


def mismatch(expected: Any, value: Any) -> str | None:
    """Why `value` does not match `expected` ("expected DataFrame, got dict"), or None."""
    problem = _problem(expected, value)
    if problem is None:
        return None
    return f"expected {type_name(expected)}, got {type(value).__name__}" + (
        f" ({problem})" if problem else ""
    )


def _problem(tp: Any, value: Any) -> str | None:
    """None when `value` fits `tp`; otherwise "" or a detail (a validation error)."""
    if tp is Any or tp is object:
        return None
    if tp is None or tp is type(None):
        return None if value is None else ""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _problem(typing.get_args(tp)[0], value)
    if origin is typing.Union or origin is types.UnionType:
        details = [_problem(arm, value) for arm in typing.get_args(tp)]
        if any(d is None for d in details):
            return None
        return next((d for d in details if d), "")
    if origin is typing.Literal:
        return None if value in typing.get_args(tp) else ""
    if origin is not None:
        tp = origin  # dict[str, int] -> dict, collections.abc.Sequence[int] -> Sequence
    if not isinstance(tp, type):
        return None  # a TypeVar, NewType, ForwardRef, ...: nothing we can check at run time
    if tp in _NUMERIC:
        import numbers

        return None if isinstance(value, getattr(numbers, _NUMERIC[tp])) else ""
    if isinstance(value, dict) and _is_pydantic_model(tp):  # (a dict is never a model's instance)
        try:
            tp.model_validate(value)
        except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError
            return str(exc).splitlines()[0] + _first_error(exc)
        return None
    try:
        return None if isinstance(value, tp) else ""
    except TypeError:
        return None  # a Protocol that is not runtime-checkable


class _PydanticModel(Protocol):
    """A pydantic model class, as far as this module uses one."""

    def model_validate(self, obj: Any, /) -> object: ...


def _is_pydantic_model(tp: type) -> TypeGuard[_PydanticModel]:
    pydantic = sys.modules.get("pydantic")  # the user's module imported it, if it uses it
    base = getattr(pydantic, "BaseModel", None) if pydantic is not None else None
    return base is not None and issubclass(tp, base)


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    try:
        first = errors()[0] if callable(errors) else None
    except Exception:  # noqa: BLE001
        first = None
    if not first:
        return ""
    where = ".".join(str(p) for p in first.get("loc", ())) or "value"
    return f": {where}: {first.get('msg', '')}"


def check_output(fn: Any, value: Any, what: str, log: logging.Logger | None = None) -> None:
    """Check `value` against `fn`'s return annotation.

    Raises:
        OutputTypeError: "output of asset 'x' does not match its type: expected ..., got ...".
    """
    expected = return_annotation(fn, what, log)
    if expected is None:
        return
    problem = mismatch(expected, value)
    if problem is not None:
        raise OutputTypeError(f"output of {what} does not match its type: {problem}")


__all__ = ["OutputTypeError", "check_output", "mismatch", "type_name"]
