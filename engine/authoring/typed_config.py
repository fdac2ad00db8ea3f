"""Typed run config: an asset parameter annotated with a pydantic model or a dataclass.

    class TrainConfig(BaseModel):
        C: float = 1.0

    @asset
    def trained_model(features, config: TrainConfig): ...

The loader finds the parameter and captures the class's JSON schema (`describe_config`), so the
engine checks a run's params against it where the run is planned (`check_params_against`),
without importing the pipeline module; the step's worker then builds the instance
(`instantiate`). pydantic is imported only where a schema is made or checked, never by a worker
whose step has no typed config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.errors import EngineError


class ConfigParamError(EngineError):
    """A run's params do not validate against an asset's typed config (one line)."""

    title = "Bad config"


def _is_pydantic(cls: object) -> bool:
    module = sys.modules.get("pydantic")  # a model's module imported pydantic already
    return module is not None and isinstance(cls, type) and issubclass(cls, module.BaseModel)


def is_config_class(cls: object) -> bool:
    """A pydantic model or a dataclass (the class, not an instance)."""
    return isinstance(cls, type) and (dataclasses.is_dataclass(cls) or _is_pydantic(cls))


def config_param(fn: Callable[..., Any]) -> tuple[str, type] | None:
    """The parameter of `fn` annotated with a config class, and the class; None if none.

    Reads the annotations only when there are some besides the return's, so an unannotated
    asset costs a dict lookup.

    Raises:
        TypeError: two parameters are annotated with a config class.
    """
    raw = getattr(fn, "__annotations__", None) or {}
    if not any(name != "return" for name in raw):
        return None
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - one annotation does not resolve (a TYPE_CHECKING import)
        hints = _each_hint(fn, raw)
    # The step's context is no config, though `StepContext` is a dataclass.
    found = [
        (n, c) for n, c in hints.items() if n not in ("return", "context") and is_config_class(c)
    ]
    if len(found) > 1:
        raise TypeError(
            f"two parameters have a typed config ({found[0][0]!r} and {found[1][0]!r}): use one"
        )
    return found[0] if found else None


def _each_hint(fn: Callable[..., Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """The annotations that resolve, one by one, as `typing.get_type_hints` resolves them all
    (a string is evaluated in the function's module); the others are left out."""
    namespace = getattr(fn, "__globals__", {})
    hints: dict[str, Any] = {}
    for name, annotation in raw.items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # noqa: S307 - what typing does too
            except Exception:  # noqa: BLE001, S112 - not a class we could use
                continue
        hints[name] = annotation
    return hints


def describe_config(param: str, cls: type) -> dict[str, Any]:
    """The plain data the manifest keeps of a typed config: the parameter, the class, its
    JSON schema, and whether it refuses unknown fields (unless its model allows extras)."""
    from pydantic import TypeAdapter

    extra = cls.model_config.get("extra") if _is_pydantic(cls) else None  # type: ignore[attr-defined]
    try:
        # A pydantic model's own method: it honours the model's json_schema_extra and such.
        adapter: Any = cls if _is_pydantic(cls) else TypeAdapter(cls)
        schema = adapter.model_json_schema() if _is_pydantic(cls) else adapter.json_schema()
    except Exception:  # noqa: BLE001 - a field type with no JSON schema (arbitrary_types_allowed)
        # Its names and which are required are still checked where the run is planned; the
        # values are checked by the class itself, in the step.
        schema = _names_only(cls)
    return {
        "param": param,
        "class": cls.__qualname__,
        "kind": "pydantic" if _is_pydantic(cls) else "dataclass",
        "schema": schema,
        "forbid_extra": extra not in ("allow", "ignore"),
    }


def _names_only(cls: type) -> dict[str, Any]:
    """A schema of the fields' names and which are required, any value allowed."""
    if _is_pydantic(cls):
        fields = cls.model_fields  # type: ignore[attr-defined]
        required = [name for name, info in fields.items() if info.is_required()]
    else:
        missing = dataclasses.MISSING
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [
            f.name for f in fields.values() if f.default is missing and f.default_factory is missing
        ]
    return {"properties": {name: {} for name in fields}, "required": required}


def fields_of(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each field of a described config: name, type (as it reads), default (or absent),
    required, description: what a form shows."""
    schema = config["schema"]
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        field: dict[str, Any] = {
            "name": name,
            "type": type_label(prop, schema.get("$defs", {})),
            "required": name in required,
            "description": prop.get("description"),
        }
        if "default" in prop:
            field["default"] = prop["default"]
        out.append(field)
    return out


def type_label(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    """A JSON schema as a short type name: `float`, `list[str]`, `int | None`."""
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " | ".join(type_label(p, defs) for p in prop[key])
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    kind = prop.get("type")
    names = {"string": "str", "integer": "int", "number": "float", "boolean": "bool",
             "null": "None", "object": "dict"}  # fmt: skip
    if kind == "array":
        items = prop.get("items")
        return f"list[{type_label(items, defs)}]" if items else "list"
    if isinstance(kind, str):
        return names.get(kind, kind)
    return "any"


def _accepts_string(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> bool:
    if "$ref" in prop:
        return _accepts_string(defs.get(str(prop["$ref"]).rsplit("/", 1)[-1], {}), defs)
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return any(_accepts_string(p, defs) for p in prop[key])
    if "enum" in prop:
        return any(isinstance(v, str) for v in prop["enum"])
    kind = prop.get("type")
    return kind is None or kind == "string" or (isinstance(kind, list) and "string" in kind)


def coerce(config: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The params that are fields of the config, a string read as JSON where the field does
    not take a plain string (`--param C=0.5`, `--param 'tags=["a","b"]'`)."""
    schema = config["schema"]
    props = schema.get("properties", {})
    defs = schema.get("$defs", {})
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name not in props:
            continue
        if isinstance(value, str) and not _accepts_string(props[name], defs):
            # Left as given when it is no JSON: validation says what is wrong with it.
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        out[name] = value
    return out


def check_params_against(
    what: str, config: Mapping[str, Any], params: Mapping[str, Any]
) -> dict[str, Any]:
    """Validate `params` against a described config; the fields given, as validated (JSON-ready).

    Raises:
        ConfigParamError: a value does not validate (one line naming the field and why).
    """
    from pydantic import ValidationError

    model = _model_of(config)
    given = coerce(config, params)
    try:
        validated = model.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"]) or "(config)"
        shown = "" if first["type"] == "missing" else f" (got {first.get('input')!r:.60})"
        raise ConfigParamError(f"{what}: config field {loc!r}: {first['msg']}{shown}") from None
    dumped = validated.model_dump(mode="json", include=set(given))
    return {name: dumped[name] for name in given}


def check_run_params(
    typed: Sequence[tuple[str, Mapping[str, Any]]],
    params: Mapping[str, Any],
    allowed: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Check a run's params against the described configs of its assets with one, `typed`
    as (asset, config): each value against every config naming it, and a param that is no
    field of any of them refused (unless a model allows extras, or the engine gives it:
    `allowed`). The params, with the values as validated (`"0.5"` for a float is 0.5).

    Raises:
        ConfigParamError: a value does not validate, a required field is missing, or a param
            is a field of no typed config.
    """
    from engine.errors import suggest

    out = dict(params)
    fields: dict[str, None] = {}
    for name, config in typed:
        out.update(check_params_against(f"asset {name!r}", config, params))
        fields.update(dict.fromkeys(config["schema"].get("properties", {})))
    if typed and all(config.get("forbid_extra", True) for _, config in typed):
        unknown = [p for p in params if p not in fields and p not in allowed]
        if unknown:
            name, config = typed[0]
            same = [f for f in fields if f.lower() == unknown[0].lower()]  # `c` for `C`
            hint = f" (did you mean {same[0]}?)" if same else suggest(unknown[0], fields)
            raise ConfigParamError(
                f"asset {name!r}: config {config['class']} has no field {unknown[0]!r}{hint}"
            )
    return out


_MODELS: dict[str, Any] = {}


def _model_of(config: Mapping[str, Any]) -> Any:
    """A pydantic model built from the captured JSON schema (cached by its text): the engine
    checks params without the user's class. pydantic has no validator for a JSON schema, and
    jsonschema is no dependency; the schemas of config classes use few of its keywords."""
    key = json.dumps(config["schema"], sort_keys=True)
    model = _MODELS.get(key)
    if model is None:
        from pydantic import ConfigDict, Field, create_model

        schema = config["schema"]
        defs = schema.get("$defs", {})
        required = set(schema.get("required", ()))
        fields: dict[str, Any] = {}
        for name, prop in schema.get("properties", {}).items():
            default = ... if name in required else prop.get("default")
            fields[name] = (_py_type(prop, defs, 0), Field(default=default))
        forbid = config.get("forbid_extra", True)
        model = create_model(
            "config", __config__=ConfigDict(extra="forbid" if forbid else "ignore"), **fields
        )
        _MODELS[key] = model
    return model


def _py_type(prop: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> Any:
    from typing import Annotated, Literal, Union

    from pydantic import ConfigDict, Field, create_model

    if depth > 20:  # a recursive model: what is deeper is taken as it is
        return Any
    if "$ref" in prop:
        return _py_type(defs.get(str(prop["$ref"]).rsplit("/", 1)[-1], {}), defs, depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in prop:
            options = tuple(_py_type(p, defs, depth + 1) for p in prop[key])
            return Union[options]  # noqa: UP007 - built from a tuple at run time
    if "enum" in prop:
        return Literal[tuple(prop["enum"])]
    if "const" in prop:
        return Literal[prop["const"]]
    kind = prop.get("type")
    if isinstance(kind, list):
        return Union[tuple(_py_type({**prop, "type": k}, defs, depth + 1) for k in kind)]  # noqa: UP007
    constraints = {
        arg: prop[key]
        for key, arg in (
            ("minimum", "ge"), ("maximum", "le"), ("exclusiveMinimum", "gt"),
            ("exclusiveMaximum", "lt"), ("minLength", "min_length"),
            ("maxLength", "max_length"), ("pattern", "pattern"),
            ("minItems", "min_length"), ("maxItems", "max_length"),
        )
        if key in prop
    }  # fmt: skip
    base: Any
    if kind == "string":
        base = str
    elif kind == "integer":
        base = int
    elif kind == "number":
        base = float
    elif kind == "boolean":
        base = bool
    elif kind == "null":
        return type(None)
    elif kind == "array":
        items = prop.get("items")
        base = list[_py_type(items, defs, depth + 1)] if items else list  # type: ignore[misc]
    elif kind == "object" and "properties" in prop:
        required = set(prop.get("required", ()))
        fields = {
            name: (
                _py_type(p, defs, depth + 1),
                Field(default=... if name in required else p.get("default")),
            )
            for name, p in prop["properties"].items()
        }
        base = create_model(  # type: ignore[call-overload]
            prop.get("title", "nested"), __config__=ConfigDict(extra="forbid"), **fields
        )
    elif kind == "object":
        extra = prop.get("additionalProperties")
        value = _py_type(extra, defs, depth + 1) if isinstance(extra, dict) else Any
        base = dict[str, value]  # type: ignore[valid-type]
    else:
        return Any
    return Annotated[base, Field(**constraints)] if constraints else base


def instantiate(cls: type, params: Mapping[str, Any]) -> Any:
    """The config object for a step, from the run's params (already checked when the run was
    planned). A pydantic model validates them again with its own validators.

    Raises:
        Exception: whatever the class raises for values it refuses.
    """
    if _is_pydantic(cls):
        fields = cls.model_fields  # type: ignore[attr-defined]
        return cls.model_validate({k: v for k, v in params.items() if k in fields})  # type: ignore[attr-defined]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in names})
