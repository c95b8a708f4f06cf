"""Workflow templates: a ComfyUI API-format graph plus the parameters a user may set.

A template declares each parameter's type, limits and the graph inputs it binds to.
``build_graph`` copies the parsed graph and assigns values to those inputs, so no user
text ever becomes part of the graph's structure.
"""
from __future__ import annotations

import copy
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import PROJECT_ROOT
from shared.errors import Unprocessable

WORKFLOWS_DIR = PROJECT_ROOT / "workflows"
PARAM_TYPES = {"string", "int", "float"}
# Seeds stay below 2**53 so browsers can hold them exactly.
RANDOM_SEED_LIMIT = 2**53
SIZE_PATTERN = re.compile(r"^\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*$")


class TemplateError(ValueError):
    """A workflow file is malformed; the process must not start with it."""


@dataclass(frozen=True)
class Template:
    name: str
    version: int
    labels: dict[str, str]
    price_per_image: int
    graph: dict[str, Any]
    parameters: list[dict[str, Any]]
    outputs: list[str]
    requires: dict[str, Any]

    def parameter(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.parameters if p["name"] == name), None)

    def public(self) -> dict[str, Any]:
        """What clients see in the model catalog."""
        return {"name": self.name, "version": self.version, "labels": self.labels,
                "pricePerImage": self.price_per_image,
                "parameters": [{k: v for k, v in p.items() if k != "bind"} for p in self.parameters]}


def _fits(kind: str, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if kind == "string":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, (int, float))


def parse_template(data: dict[str, Any]) -> Template:
    """Check a parsed template: every binding names an existing node input of a fitting type."""
    try:
        graph, parameters, outputs = data["graph"], data["parameters"], data["outputs"]
        template = Template(name=str(data["name"]), version=int(data["version"]), labels=dict(data["labels"]),
                            price_per_image=int(data["pricePerImage"]), graph=graph,
                            parameters=list(parameters), outputs=[str(o) for o in outputs],
                            requires=dict(data.get("requires", {})))
    except (KeyError, TypeError, ValueError) as exc:
        raise TemplateError(f"workflow template is missing or has a malformed field: {exc}") from exc
    for node_id, node in graph.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs"), dict):
            raise TemplateError(f"{template.name}: node {node_id} needs class_type and inputs")
    for output in template.outputs:
        if output not in graph:
            raise TemplateError(f"{template.name}: output node {output} is not in the graph")
    seen: set[str] = set()
    for param in template.parameters:
        name, kind = param.get("name"), param.get("type")
        if not name or name in seen or kind not in PARAM_TYPES:
            raise TemplateError(f"{template.name}: parameter {name!r} has a missing/duplicate name or bad type")
        seen.add(name)
        if "default" in param and not _fits(kind, param["default"]):
            raise TemplateError(f"{template.name}: default of {name} is not a {kind}")
        if not param.get("bind"):
            raise TemplateError(f"{template.name}: parameter {name} binds to nothing")
        for node_id, input_name in param["bind"]:
            inputs = graph.get(node_id, {}).get("inputs", {})
            if input_name not in inputs:
                raise TemplateError(f"{template.name}: {name} binds to missing input {node_id}.{input_name}")
            current = inputs[input_name]
            if isinstance(current, list) or not _fits(kind, current) and not (kind == "int" and isinstance(current, float)):
                raise TemplateError(f"{template.name}: {name} ({kind}) cannot fill {node_id}.{input_name}={current!r}")
    return template


def load_template(path: Path) -> Template:
    with open(path, encoding="utf-8") as handle:
        return parse_template(json.load(handle))


def load_templates(directory: Path = WORKFLOWS_DIR) -> dict[str, Template]:
    """Every ``*.json`` template in ``directory``, by name."""
    templates = {}
    for path in sorted(directory.glob("*.json")):
        template = load_template(path)
        templates[template.name] = template
    if not templates:
        raise TemplateError(f"no workflow templates in {directory}")
    return templates


def build_graph(template: Template, params: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy of the template's graph with every bound input set from ``params``."""
    graph = copy.deepcopy(template.graph)
    for param in template.parameters:
        if param["name"] not in params:
            continue
        for node_id, input_name in param["bind"]:
            graph[node_id]["inputs"][input_name] = params[param["name"]]
    return graph


def _normalise_legacy(raw: dict[str, Any], errors: dict[str, list[str]]) -> dict[str, Any]:
    """Accept the original product's ``size: "WxH"`` alongside ``width``/``height``."""
    values = dict(raw)
    if "size" in values:
        size = values.pop("size")
        match = SIZE_PATTERN.match(size) if isinstance(size, str) else None
        if match is None:
            errors["size"] = ['Must look like "512x768".']
        elif "width" in values or "height" in values:
            errors["size"] = ["Give either size or width/height, not both."]
        else:
            values["width"], values["height"] = int(match.group(1)), int(match.group(2))
    return values


def _check(param: dict[str, Any], value: Any, choices: dict[str, list[str]] | None) -> tuple[Any, str | None]:
    """The accepted value, or an error message."""
    kind = param["type"]
    if not _fits(kind, value):
        return None, {"string": "Must be a string.", "int": "Must be an integer.",
                      "float": "Must be a number."}[kind]
    if kind == "string":
        if param.get("required") and not value.strip():
            return None, "Must not be empty."
        if "maxLength" in param and len(value) > param["maxLength"]:
            return None, f"Must be at most {param['maxLength']} characters."
        source = param.get("from")
        if source and choices and choices.get(source) and value not in choices[source]:
            return None, f"Unknown {source[:-1] if source.endswith('s') else source}: {value!r}."
        return value, None
    if kind == "float":
        value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        return None, "Must be a finite number."
    if "min" in param and value < param["min"] or "max" in param and value > param["max"]:
        return None, f"Must be between {param.get('min')} and {param.get('max')}."
    if "multipleOf" in param and value % param["multipleOf"]:
        return None, f"Must be a multiple of {param['multipleOf']}."
    if "random" in param and value == param["random"]:
        value = secrets.randbelow(RANDOM_SEED_LIMIT)
    return value, None


def validate_params(template: Template, raw: Any,
                    choices: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Check user input against the template and return the complete resolved parameters.

    ``choices`` holds the live worker catalog (``checkpoints``, ``samplers``, ``schedulers``);
    when given, ``from`` parameters must be one of them and a missing one defaults to the first.
    Unknown fields and bad values raise 422 with one message list per field.
    """
    if not isinstance(raw, dict):
        raise Unprocessable("The parameters must be a JSON object.", details={"_schema": ["Must be an object."]})
    errors: dict[str, list[str]] = {}
    values = _normalise_legacy(raw, errors)
    known = {p["name"] for p in template.parameters}
    for name in values:
        if name not in known:
            errors[name] = ["Unknown field."]
    resolved: dict[str, Any] = {}
    for param in template.parameters:
        name = param["name"]
        if name in errors:
            continue
        if name not in values or values[name] is None:
            source_choices = (choices or {}).get(param.get("from", ""), [])
            if "default" in param:
                value = param["default"]
            elif source_choices and not param.get("required"):
                value = source_choices[0]
            else:
                errors[name] = ["Missing data for required field."]
                continue
        else:
            value = values[name]
        accepted, problem = _check(param, value, choices)
        if problem:
            errors[name] = [problem]
        else:
            resolved[name] = accepted
    if "size" in raw:  # report problems of the derived width/height under the field the caller sent
        for name in ("width", "height"):
            if name in errors:
                errors.setdefault("size", []).extend(f"{name}: {message}" for message in errors.pop(name))
    if errors:
        raise Unprocessable("Some fields are invalid.", details=errors)
    return resolved
