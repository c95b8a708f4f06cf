"""Workflow templates: a ComfyUI API-format graph plus the parameters a user may set.

A template file declares each parameter (type, default, limits or choices, or "from the
catalog", labels, and optionally a one-line ``help`` in zh and en) and where its value goes: ``bind`` lists ``[node id, input name]``
pairs (optionally ``[node, input, multiplier]``). A template may offer several
``variants`` (for example upscale with a model, or a model-free resize); each variant
has its own graph, outputs, binds and ``requires`` (node classes and model kinds), and a
worker runs the first variant its ComfyUI can run.

``build_graph`` copies the parsed graph and assigns values to the bound inputs, so no
user text ever becomes part of the graph's structure. Files are validated when loaded
and reloaded when they change (``TemplateStore``).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from shared.config import PROJECT_ROOT
from shared.errors import Unprocessable

log = logging.getLogger(__name__)

WORKFLOWS_DIR = PROJECT_ROOT / "workflows"
PARAM_TYPES = {"string", "int", "float", "image"}
# Catalog kinds a parameter may take its choices from (see services.render.catalog).
CATALOG_KINDS = {"checkpoints", "loras", "upscale_models", "diffusion_models", "text_encoders", "vaes",
                 "builtin_vaes", "samplers", "schedulers"}
# Kinds of model files: a declared default of these kinds is never swapped for another file.
FILE_KINDS = {"checkpoints", "loras", "upscale_models", "diffusion_models", "text_encoders", "vaes"}
# Seeds stay below 2**53 so browsers can hold them exactly.
RANDOM_SEED_LIMIT = 2**53
SIZE_PATTERN = re.compile(r"^\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*$")
# Fields of the original product that are accepted and ignored.
IGNORED_LEGACY_FIELDS = ("clipSkip", "frontendTaskId")
RELOAD_CHECK_SECONDS = 1.0


class TemplateError(ValueError):
    """A workflow file is malformed; it is not loaded."""


@dataclass(frozen=True)
class Bind:
    node: str
    input: str
    multiplier: float | None = None


@dataclass(frozen=True)
class Variant:
    """One runnable graph of a workflow."""

    name: str
    graph: dict[str, Any]
    outputs: list[str]
    binds: dict[str, list[Bind]]
    node_classes: list[str]
    model_kinds: list[str]

    def runnable_on(self, node_classes: set[str], models: dict[str, list[str]]) -> bool:
        return set(self.node_classes) <= node_classes and all(models.get(kind) for kind in self.model_kinds)


@dataclass(frozen=True)
class Template:
    name: str
    version: int
    labels: dict[str, str]
    parameters: list[dict[str, Any]]
    variants: list[Variant]
    max_pixels: int
    deadline_seconds: int
    estimated_seconds: float
    source: Path | None = field(default=None, compare=False)

    def parameter(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.parameters if p["name"] == name), None)

    @property
    def image_parameters(self) -> list[str]:
        return [p["name"] for p in self.parameters if p["type"] == "image"]

    def variant_for(self, node_classes: set[str], models: dict[str, list[str]]) -> Variant | None:
        return next((v for v in self.variants if v.runnable_on(node_classes, models)), None)

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def with_defaults(self, defaults: Mapping[str, Any]) -> Template:
        """This template with the operator's defaults for some parameters (unknown names raise)."""
        unknown = sorted(set(defaults) - {p["name"] for p in self.parameters})
        if unknown:
            raise TemplateError(f"{self.name}: defaults for unknown parameters {unknown}")
        parameters = [{**p, "default": defaults[p["name"]]} if p["name"] in defaults else p
                      for p in self.parameters]
        for param in parameters:
            _check_parameter(self.name, param, set())
        return dataclasses.replace(self, parameters=parameters)

    def public(self, price_per_image: int | None = None) -> dict[str, Any]:
        """What clients see in the model catalog."""
        return {"name": self.name, "version": self.version, "labels": self.labels,
                "pricePerImage": price_per_image, "maxPixels": self.max_pixels,
                "parameters": [{k: v for k, v in p.items() if k != "bind"} for p in self.parameters],
                "variants": [v.name for v in self.variants]}


def _fits(kind: str, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if kind in ("string", "image"):
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, (int, float))


def _parse_binds(name: str, raw: Any) -> list[Bind]:
    if not isinstance(raw, list) or not raw:
        raise TemplateError(f"parameter {name} binds to nothing")
    binds = []
    for entry in raw:
        if not isinstance(entry, list) or len(entry) not in (2, 3):
            raise TemplateError(f"parameter {name}: a bind is [node, input] or [node, input, multiplier]")
        binds.append(Bind(str(entry[0]), str(entry[1]), float(entry[2]) if len(entry) == 3 else None))
    return binds


def _check_variant(template_name: str, variant: Variant, parameters: list[dict[str, Any]]) -> None:
    graph = variant.graph
    where = f"{template_name}/{variant.name}"
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs"), dict):
            raise TemplateError(f"{where}: node {node_id} needs class_type and inputs")
        for input_name, value in node["inputs"].items():
            if isinstance(value, list) and (len(value) != 2 or str(value[0]) not in graph):
                raise TemplateError(f"{where}: {node_id}.{input_name} links to a missing node")
    if not variant.outputs:
        raise TemplateError(f"{where}: no output nodes")
    for output in variant.outputs:
        if output not in graph:
            raise TemplateError(f"{where}: output node {output} is not in the graph")
    kinds = {p["name"]: p["type"] for p in parameters}
    for name, binds in variant.binds.items():
        if name not in kinds:
            raise TemplateError(f"{where}: binds unknown parameter {name}")
        for bind in binds:
            inputs = graph.get(bind.node, {}).get("inputs", {})
            if bind.input not in inputs:
                raise TemplateError(f"{where}: {name} binds to missing input {bind.node}.{bind.input}")
            current = inputs[bind.input]
            kind = "float" if bind.multiplier is not None else kinds[name]
            fits = _fits(kind, current) or (kind == "int" and isinstance(current, float)) \
                or (kind == "float" and isinstance(current, int))
            if isinstance(current, list) or not fits:
                raise TemplateError(f"{where}: {name} ({kind}) cannot fill {bind.node}.{bind.input}={current!r}")
    unbound = [p["name"] for p in parameters if p["name"] not in variant.binds and not p.get("optional")]
    if unbound:
        raise TemplateError(f"{where}: parameters bound nowhere: {unbound}")


def _check_parameter(template_name: str, param: dict[str, Any], seen: set[str]) -> None:
    name, kind = param.get("name"), param.get("type")
    if not isinstance(name, str) or not name or name in seen or kind not in PARAM_TYPES:
        raise TemplateError(f"{template_name}: parameter {name!r} has a missing/duplicate name or bad type")
    seen.add(name)
    if "default" in param and not _fits(kind, param["default"]):
        raise TemplateError(f"{template_name}: default of {name} is not a {kind}")
    if "from" in param and param["from"] not in CATALOG_KINDS:
        raise TemplateError(f"{template_name}: {name} takes choices from unknown kind {param['from']!r}")
    if "choices" in param and not (isinstance(param["choices"], list) and param["choices"]
                                   and all(_fits(kind, c) for c in param["choices"])):
        raise TemplateError(f"{template_name}: choices of {name} must be a non-empty list of {kind}")
    if not isinstance(param.get("labels"), dict) or not {"zh", "en"} <= set(param["labels"]):
        raise TemplateError(f"{template_name}: parameter {name} needs zh and en labels")
    help_text = param.get("help")
    if help_text is not None and not (isinstance(help_text, dict) and {"zh", "en"} <= set(help_text)
                                      and all(isinstance(text, str) for text in help_text.values())):
        raise TemplateError(f"{template_name}: the help of {name} must give zh and en texts")


def parse_template(data: dict[str, Any], source: Path | None = None) -> Template:
    """Check a parsed template file and build its Template (TemplateError when it does not hold)."""
    try:
        name = str(data["name"])
        parameters = list(data["parameters"])
        seen: set[str] = set()
        for param in parameters:
            _check_parameter(name, param, seen)
        raw_variants = data.get("variants") or [{
            "name": "default", "graph": data["graph"], "outputs": data["outputs"],
            "requires": data.get("requires", {}),
            "bind": {p["name"]: p["bind"] for p in parameters if "bind" in p}}]
        variants = []
        for raw in raw_variants:
            graph = raw["graph"]
            requires = raw.get("requires") or {}
            classes = sorted({str(node.get("class_type")) for node in graph.values() if isinstance(node, dict)}
                             | set(requires.get("nodes", [])))
            variant = Variant(name=str(raw["name"]), graph=graph, outputs=[str(o) for o in raw["outputs"]],
                              binds={str(k): _parse_binds(k, v) for k, v in raw.get("bind", {}).items()},
                              node_classes=classes, model_kinds=[str(k) for k in requires.get("models", [])])
            _check_variant(name, variant, parameters)
            variants.append(variant)
        if len({v.name for v in variants}) != len(variants):
            raise TemplateError(f"{name}: variant names must be unique")
        return Template(name=name, version=int(data["version"]), labels=dict(data["labels"]),
                        parameters=parameters, variants=variants, max_pixels=int(data.get("maxPixels", 2048 * 2048)),
                        deadline_seconds=int(data.get("deadlineSeconds", 600)),
                        estimated_seconds=float(data.get("estimatedSeconds", 10)), source=source)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, TemplateError):
            raise
        raise TemplateError(f"workflow template is missing or has a malformed field: {exc!r}") from exc


def load_template(path: Path) -> Template:
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except ValueError as exc:
            raise TemplateError(f"{path.name} is not valid JSON: {exc}") from exc
    return parse_template(data, path)


def load_templates(directory: Path = WORKFLOWS_DIR) -> dict[str, Template]:
    """Every ``*.json`` template in ``directory``, by name; a malformed file raises."""
    templates = {}
    for path in sorted(directory.glob("*.json")):
        template = load_template(path)
        templates[template.name] = template
    if not templates:
        raise TemplateError(f"no workflow templates in {directory}")
    return templates


class TemplateStore:
    """The templates of a folder, reloaded when a file's mtime or the file set changes.

    A file that fails validation on reload is skipped (and logged); the previous good
    version of that workflow stays in service. ``defaults`` (workflow → parameter → value,
    from the settings) replace the templates' own defaults.
    """

    def __init__(self, directory: Path = WORKFLOWS_DIR,
                 defaults: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.directory = directory
        self.defaults = dict(defaults or {})
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, float], ...] = ()
        self._checked = 0.0
        self._templates: dict[str, Template] = {}
        self._reload(self._scan())
        if not self._templates:
            raise TemplateError(f"no valid workflow templates in {directory}")

    def _scan(self) -> tuple[tuple[str, float], ...]:
        return tuple(sorted((p.name, p.stat().st_mtime) for p in self.directory.glob("*.json")))

    def _reload(self, stamp: tuple[tuple[str, float], ...]) -> None:
        previous = {t.source.name if t.source else "": t for t in self._templates.values()}
        loaded: dict[str, Template] = {}
        for file_name, _ in stamp:
            try:
                template = load_template(self.directory / file_name)
                if template.name in self.defaults:
                    template = template.with_defaults(self.defaults[template.name])
            except (TemplateError, OSError) as exc:
                log.error("workflow %s not loaded: %s", file_name, exc)
                if file_name in previous:
                    template = previous[file_name]
                else:
                    continue
            loaded[template.name] = template
        self._templates, self._stamp = loaded, stamp

    def all(self) -> dict[str, Template]:
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK_SECONDS:
            with self._lock:
                self._checked = now
                stamp = self._scan()
                if stamp != self._stamp:
                    self._reload(stamp)
        return self._templates

    def get(self, name: str) -> Template | None:
        return self.all().get(name)


def _bound_value(value: Any, bind: Bind) -> Any:
    return value if bind.multiplier is None else float(value) * bind.multiplier


def build_graph(template: Template, variant: Variant, params: dict[str, Any],
                overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fresh copy of the variant's graph with every bound input set from ``params``.

    ``overrides`` replaces parameter values at run time (an image parameter becomes the
    file name ComfyUI gave the uploaded image).
    """
    values = {**params, **(overrides or {})}
    graph = copy.deepcopy(variant.graph)
    for name, binds in variant.binds.items():
        if name not in values or values[name] is None:
            continue
        for bind in binds:
            graph[bind.node]["inputs"][bind.input] = _bound_value(values[name], bind)
    return graph


# A WebP thumbnail of each image, made by ComfyUI beside the original (its core nodes) so that the
# worker neither decodes the image nor encodes the thumbnail; method "fastest" is libwebp's 0.
THUMBNAIL_NODE_CLASSES = frozenset({"ImageFromBatch", "ImageScaleToMaxDimension", "SaveAnimatedWEBP"})
THUMBNAIL_SIZE = 512


def with_thumbnails(graph: dict[str, Any], outputs: list[str], images: int, node_classes: set[str],
                    params: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """``graph`` with ComfyUI also saving a WebP thumbnail (longer side ``THUMBNAIL_SIZE``) of each
    of the ``images`` its output node saves: a chain per image (pick it from the batch, scale,
    save), and the saving nodes' ids in the images' order. ``graph`` itself, and no ids, when
    ComfyUI lacks a node class or the variant saves from more than one node (which thumbnail
    belongs to which image would be a guess). ``graph`` is not changed: the job records the
    workflow's own graph, what it takes to reproduce its images.

    When the job's ``params`` ask for images within ``THUMBNAIL_SIZE`` (their ``width`` and
    ``height``), the chain leaves the scale out: ComfyUI's node would enlarge them, and a
    thumbnail is never larger than its image (the worker checks the size it gets either way)."""
    source = graph[outputs[0]]["inputs"].get("images") if len(outputs) == 1 else None
    if not isinstance(source, list) or not THUMBNAIL_NODE_CLASSES <= node_classes:
        return graph, []
    chained, saving, scale = dict(graph), [], not _within_thumbnail(params or {})
    for index in range(images):
        node = f"thumbnail{index}"
        chained.update(thumbnail_chain(node, source, index, scale))
        saving.append(node)
    return chained, saving


def _within_thumbnail(params: dict[str, Any]) -> bool:
    width, height = params.get("width"), params.get("height")
    return isinstance(width, int) and isinstance(height, int) and max(width, height) <= THUMBNAIL_SIZE


def thumbnail_chain(node: str, source: list[Any], index: int, scale: bool = True) -> dict[str, dict[str, Any]]:
    """The nodes making the thumbnail of image ``index`` of the batch at ``source``, the saving
    one named ``node``; without ``scale``, the image as it is."""
    chain = {f"{node}_pick": {"class_type": "ImageFromBatch",
                              "inputs": {"image": source, "batch_index": index, "length": 1}}}
    if scale:
        chain[f"{node}_scale"] = {"class_type": "ImageScaleToMaxDimension",
                                  "inputs": {"image": [f"{node}_pick", 0], "upscale_method": "area",
                                             "largest_size": THUMBNAIL_SIZE}}
    chain[node] = {"class_type": "SaveAnimatedWEBP",
                   "inputs": {"images": [f"{node}_scale" if scale else f"{node}_pick", 0],
                              "filename_prefix": "aigc/thumbnail", "fps": 6.0, "lossless": False, "quality": 80,
                              "method": "fastest"}}
    return chain


def _normalise_legacy(raw: dict[str, Any], errors: dict[str, list[str]]) -> dict[str, Any]:
    """Accept the original product's ``size: "WxH"`` alongside ``width``/``height``."""
    values = {k: v for k, v in raw.items() if k not in IGNORED_LEGACY_FIELDS}
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


def _type_problem(kind: str) -> str:
    return {"string": "Must be a string.", "image": "Must be a string such as \"upload:<id>\".",
            "int": "Must be an integer.", "float": "Must be a number."}[kind]


def _check(param: dict[str, Any], value: Any, choices: dict[str, list[str]] | None) -> tuple[Any, str | None]:
    """The accepted value, or an error message."""
    kind = param["type"]
    if not _fits(kind, value):
        return None, _type_problem(kind)
    if kind in ("string", "image"):
        if param.get("required") and not value.strip():
            return None, "Must not be empty."
        if len(value) > param.get("maxLength", 2000):
            return None, f"Must be at most {param.get('maxLength', 2000)} characters."
        source = param.get("from")
        if source and choices is not None and value not in choices.get(source, []):
            return None, f"Not available: {value!r}."
    if "choices" in param and value not in param["choices"]:
        return None, f"Must be one of {param['choices']}."
    if kind in ("string", "image"):
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


def _catalog_default(param: dict[str, Any], choices: dict[str, list[str]] | None) -> Any:
    """The first catalog entry matching ``match`` (or the first at all), else None."""
    names = (choices or {}).get(param.get("from", ""), [])
    pattern = param.get("match")
    preferred = [n for n in names if pattern and re.search(pattern, n)]
    return (preferred or names or [None])[0]


def validate_params(template: Template, raw: Any,
                    choices: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Check user input against the template and return the complete resolved parameters.

    ``choices`` holds the live catalog by kind (``checkpoints``, ``samplers``, …); when
    given, ``from`` parameters must be one of them and a missing one defaults to the first
    (preferring names that match the parameter's ``match``). Unknown fields and bad values
    raise 422 with one message list per field. The seed −1 becomes a concrete number.
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
            value = param["default"] if "default" in param else None
            if value is None and "from" in param and not param.get("required"):
                value = _catalog_default(param, choices)
            if value is None:
                if param.get("optional"):
                    continue
                errors[name] = ["Missing data for required field."]
                continue
            if "from" in param and param["from"] not in FILE_KINDS and choices is not None \
                    and value not in choices.get(param["from"], []):
                value = _catalog_default(param, choices) or value  # e.g. another sampler; never another file
        else:
            value = values[name]
        accepted, problem = _check(param, value, choices)
        if problem:
            errors[name] = [problem]
        else:
            resolved[name] = accepted
    if "width" in resolved and "height" in resolved and resolved["width"] * resolved["height"] > template.max_pixels:
        errors.setdefault("size", []).append(
            f"{resolved['width']}x{resolved['height']} exceeds {template.max_pixels} pixels.")
    if "size" in raw:  # report problems of the derived width/height under the field the caller sent
        for name in ("width", "height"):
            if name in errors:
                errors.setdefault("size", []).extend(f"{name}: {message}" for message in errors.pop(name))
    if errors:
        raise Unprocessable("Some fields are invalid.", details=errors)
    return resolved
