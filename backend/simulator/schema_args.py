"""Tool arguments from a tool's JSON schema: valid ones, deliberately invalid ones, and a check.

The simulated model calls tools with arguments built here. They must pass the validation CrewAI
runs before a tool executes (pydantic, from the tool's ``args_schema``), so the generator follows
the schema CrewAI sends: native tools carry OpenAI strict schemas (every property required, optional
ones as ``anyOf [..., null]``, nested models inlined); the ReAct prompt carries pydantic's schema.

:func:`is_valid` is a small subset of JSON Schema (types, enum, const, required, properties,
additionalProperties false, items, anyOf/oneOf/allOf, local ``$ref``). The simulator uses it to tell
its own earlier calls with invalid arguments from the valid ones when it counts tool rounds.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_MAX_DEPTH = 8  # recursive models ($ref cycles) stop here
# Candidate invalid values for a property, tried in order: the first the schema rejects is used.
# None of them is coerced by pydantic's lax mode (a numeric string would be: "1" is a valid int).
_WRONG_VALUES: tuple[Any, ...] = ("not-a-valid-value", 12345, ["not", "an", "object"])
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "agent@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def example_arguments(schema: Any, text: str) -> dict[str, Any]:
    """Schema-valid arguments: required properties only; strings are ``text``, integers 1, numbers
    1.0, booleans true, arrays [], objects their own required properties, enums their first value."""
    if not isinstance(schema, dict):
        return {}
    value = _example(schema, text, schema.get("$defs") or {}, 0)
    return value if isinstance(value, dict) else {}


def invalid_arguments(schema: Any, text: str) -> dict[str, Any]:
    """Arguments that fail validation: the first required property (else the first property) gets
    a value of the wrong type, or goes missing when any value would do."""
    args = example_arguments(schema, text)
    if not isinstance(schema, dict):
        return {"unexpected_argument": 1}
    defs = schema.get("$defs") or {}
    properties: dict[str, Any] = schema.get("properties") or {}
    required = [name for name in schema.get("required") or [] if name in properties]
    target = required[0] if required else next(iter(properties), None)
    if target is not None:
        for wrong in _WRONG_VALUES:
            if not is_valid(properties[target], wrong, defs):
                return {**args, target: wrong}
    if required:
        return {name: value for name, value in args.items() if name != target}
    # Nothing to get wrong: an unknown key is the best we can do (rejected under additionalProperties
    # false; a pydantic model ignores it by default, so the tool may run after all).
    return {**args, "unexpected_argument": 1}


def is_valid(schema: Any, value: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> bool:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return True
    defs = {**(defs or {}), **(schema.get("$defs") or {})}
    schema = _resolve(schema, defs)
    if "const" in schema and value != schema["const"]:
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf") or []
        if not any(is_valid(option, value, defs, depth + 1) for option in options):
            return False
    if any(not is_valid(part, value, defs, depth + 1) for part in schema.get("allOf") or []):
        return False
    types = _types(schema)
    if types and not any(_has_type(value, t) for t in types):
        return False
    if isinstance(value, dict):
        return _object_valid(schema, value, defs, depth)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return all(is_valid(schema["items"], item, defs, depth + 1) for item in value)
    return True


def _object_valid(schema: Schema, value: dict[str, Any], defs: dict[str, Any], depth: int) -> bool:
    properties: dict[str, Any] = schema.get("properties") or {}
    if any(name not in value for name in schema.get("required") or []):
        return False
    if schema.get("additionalProperties") is False and any(name not in properties for name in value):
        return False
    return all(
        is_valid(properties[name], v, defs, depth + 1) for name, v in value.items() if name in properties
    )


def _example(schema: Schema, text: str, defs: dict[str, Any], depth: int) -> Any:
    schema = _resolve(schema, defs)
    if depth > _MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    options = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if options:
        # Optional[X] arrives as anyOf [X, null]: a real X exercises the tool more than null does.
        chosen = next((o for o in options if _types(o) != ["null"]), options[0])
        return _example(chosen, text, defs, depth + 1)
    kind = next((t for t in _types(schema) if t != "null"), None) or _implied_type(schema)
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties") or {}
        return {
            name: _example(properties.get(name) or {}, text, defs, depth + 1)
            for name in schema.get("required") or []
        }
    if kind == "array":
        # One item (a list the reader can see) unless the schema wants more or allows none.
        count = max(int(schema.get("minItems") or 0), min(1, int(schema.get("maxItems", 1))))
        return [_example(schema.get("items") or {}, text, defs, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(_bounded(1, schema))
    if kind == "number":
        return float(_bounded(1.0, schema))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, text)


def _string(schema: Schema, text: str) -> str:
    value = _FORMATS.get(str(schema.get("format")), text)
    longest = schema.get("maxLength")
    if isinstance(longest, int):
        value = value[:longest]
    shortest = schema.get("minLength")
    if isinstance(shortest, int) and len(value) < shortest:
        value = value.ljust(shortest, ".")
    return value


def _bounded(default: float, schema: Schema) -> float:
    low, high = schema.get("minimum"), schema.get("maximum")
    value = default
    if isinstance(low, int | float):
        value = max(value, low)
    if isinstance(high, int | float):
        value = min(value, high)
    return value


def _resolve(schema: Schema, defs: dict[str, Any]) -> Schema:
    """Follow a local ``#/$defs/Name`` reference (pydantic's form); other references stay as they are."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs.get(ref.removeprefix("#/$defs/"))
        if isinstance(target, dict):
            return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _types(schema: Any) -> list[str]:
    if not isinstance(schema, dict):
        return []
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    return [t for t in declared if isinstance(t, str)] if isinstance(declared, list) else []


def _implied_type(schema: Schema) -> str:
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _has_type(value: Any, kind: str) -> bool:
    # bool is an int in Python but not in JSON Schema.
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    checks: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "boolean": bool,
        "array": list,
        "object": dict,
        "null": type(None),
    }
    expected = checks.get(kind)
    return expected is None or isinstance(value, expected)
