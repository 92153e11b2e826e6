"""CRD generation: pydantic JSON Schema -> Kubernetes structural OpenAPI v3 schema.

Kubernetes accepts only a subset of JSON Schema (no $ref, no anyOf-with-null, boolean exclusive
bounds), so the pydantic schema is rewritten rather than copied.
"""
from __future__ import annotations

import json
from typing import Any

import yaml

from .spec import API_GROUP, API_VERSION, KIND, PLURAL, SafetyExperimentSpec, SafetyExperimentStatus

_DROP = {"title", "$defs", "additionalProperties", "$schema", "discriminator"}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    nullable = False
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(node["anyOf"])
        if len(options) != 1:
            raise ValueError(f"cannot express union {node['anyOf']} in a structural schema")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        node = {**options[0], **rest}
        if "$ref" in node:
            out = _structural(node, defs)
            if nullable:
                out["nullable"] = True
            return out
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out["properties"] = {k: _structural(v, defs) for k, v in value.items()}
        elif key == "items":
            out["items"] = _structural(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "default":
            if value is not None and value != {} and value != []:
                out["default"] = value
        else:
            out[key] = value
    extra = node.get("additionalProperties")
    if node.get("type") == "object" and "properties" not in out:
        if isinstance(extra, dict) and extra.get("type") in ("string", "integer", "number", "boolean"):
            out["additionalProperties"] = {"type": extra["type"]}
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif node.get("type") == "object" and extra is not False and extra is not None:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if nullable:
        out["nullable"] = True
    if "type" not in out and "x-kubernetes-preserve-unknown-fields" not in out:
        if "enum" in out:
            out["type"] = "string"
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def openapi_schema(model) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def _status_schema() -> dict[str, Any]:
    schema = openapi_schema(SafetyExperimentStatus)
    # The operator owns status and may add fields before the CRD is upgraded: keep them.
    schema["x-kubernetes-preserve-unknown-fields"] = True
    return schema


def crd() -> dict[str, Any]:
    spec_schema = openapi_schema(SafetyExperimentSpec)
    spec_schema["description"] = "What to run; see docs/spec.md for every field."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}", "labels": {"app.kubernetes.io/part-of": "lrm-safety"}},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["sexp"],
                "categories": ["lrmsafety"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
                        {"name": "ASR", "type": "number", "jsonPath": ".status.metrics.asr"},
                        {"name": "Over-Refusal", "type": "number", "jsonPath": ".status.metrics.overRefusal"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A safety fine-tuning experiment: distill, mix, train, evaluate.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": _status_schema(),
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `lrm-safety crd` from lrm_safety/spec.py. Do not edit; regenerate.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


def _rows(node: dict, path: str):
    props = node.get("properties")
    if props:
        for key, child in props.items():
            yield from _rows(child, f"{path}.{key}" if path else key)
        return
    if node.get("type") == "array" and "properties" in (node.get("items") or {}):
        yield path, "list of objects", "", node.get("description", "")
        yield from _rows(node["items"], f"{path}[]")
        return
    typ = node.get("type", "object")
    if "enum" in node:
        typ = " \\| ".join(f"`{v}`" for v in node["enum"])
    elif typ == "array":
        typ = f"list of {(node.get('items') or {}).get('type', 'object')}"
    bounds = [f"{'>' if node.get('exclusiveMinimum') else '>='} {node['minimum']}"] if "minimum" in node else []
    bounds += [f"{'<' if node.get('exclusiveMaximum') else '<='} {node['maximum']}"] if "maximum" in node else []
    default = node.get("default")
    yield (path, typ + (f" ({', '.join(bounds)})" if bounds else ""),
           "" if default is None else f"`{json.dumps(default)}`", node.get("description", "").replace("\n", " "))


def spec_docs() -> str:
    """docs/spec.md: every field of the spec with type, bounds, default and description."""
    lines = ["# SafetyExperiment spec reference", "",
             "Generated by `lrm-safety crd --docs` from `lrm_safety/spec.py`; do not edit. Fields are camelCase; "
             "an unknown field is an error. Defaults follow the study's released recipe.", "",
             "| field | type | default | description |", "|---|---|---|---|"]
    for path, typ, default, desc in _rows(openapi_schema(SafetyExperimentSpec), ""):
        lines.append(f"| `spec.{path}` | {typ} | {default} | {desc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
