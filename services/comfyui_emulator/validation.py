"""Prompt validation with ComfyUI's error types and shapes (execution.validate_prompt)."""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

from services.comfyui_emulator.catalog import Catalog
from services.comfyui_emulator.storage import Storage

COMBO_LIST_LIMIT = 20


class PromptRejected(Exception):
    """A prompt that must be answered with 400 {error, node_errors}."""

    def __init__(self, error_type: str, message: str, details: str = "", node_errors: dict | None = None) -> None:
        super().__init__(message)
        self.error = {"type": error_type, "message": message, "details": details, "extra_info": {}}
        self.node_errors = node_errors or {}


@dataclass
class ValidationResult:
    outputs: list[str]
    node_errors: dict[str, Any] = field(default_factory=dict)


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list) and len(value) == 2
        and isinstance(value[0], str) and isinstance(value[1], int) and not isinstance(value[1], bool)
    )


def _error(error_type: str, message: str, details: str, **extra_info: Any) -> dict[str, Any]:
    return {"type": error_type, "message": message, "details": details, "extra_info": extra_info}


class _Validator:
    def __init__(self, prompt: dict[str, Any], catalog: Catalog, storage: Storage) -> None:
        self.prompt = prompt
        self.catalog = catalog
        self.storage = storage
        self.validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}

    def validate_node(self, node_id: str) -> bool:
        if node_id in self.validated:
            return self.validated[node_id][0]
        node = self.prompt[node_id]
        spec = self.catalog.spec(node["class_type"])
        inputs = node.setdefault("inputs", {})
        required = spec["input"].get("required", {})
        optional = spec["input"].get("optional", {})
        errors: list[dict[str, Any]] = []
        valid = True
        for name, info in {**required, **optional}.items():
            if name not in inputs:
                if name in required:
                    errors.append(_error("required_input_missing", "Required input is missing", name, input_name=name))
                continue
            value = inputs[name]
            if is_link(value):
                valid &= self._validate_link(name, info, value, errors)
            else:
                self._validate_literal(node, name, info, value, errors)
        self.validated[node_id] = (not errors and valid, errors)
        return self.validated[node_id][0]

    def _validate_link(self, name: str, info: list, link: list, errors: list[dict[str, Any]]) -> bool:
        source_id, index = link
        source_class = self.prompt[source_id]["class_type"]
        outputs = self.catalog.output_types(source_class)
        received = outputs[index] if index < len(outputs) else None
        expected = info[0]
        if isinstance(expected, str) and expected not in ("*", "COMBO") and received not in ("*", expected):
            errors.append(_error(
                "return_type_mismatch", "Return type mismatch between linked nodes",
                f"{name}, received_type({received}) mismatch input_type({expected})",
                input_name=name, input_config=info, received_type=received, linked_node=link,
            ))
            return True
        try:
            return self.validate_node(source_id)
        except Exception as exc:
            self.validated[source_id] = (False, [_error(
                "exception_during_inner_validation", "Exception when validating inner node", str(exc),
                input_name=name, input_config=info, exception_message=str(exc),
                exception_type=type(exc).__name__, traceback=traceback.format_tb(exc.__traceback__),
                linked_node=link,
            )])
            return False

    def _validate_literal(self, node: dict, name: str, info: list, value: Any, errors: list[dict[str, Any]]) -> None:
        input_type = info[0]
        options = info[1] if len(info) > 1 else {}
        converters = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
        if isinstance(input_type, str) and input_type in converters:
            try:
                value = converters[input_type](value)
            except (TypeError, ValueError) as exc:
                errors.append(_error(
                    "invalid_input_type", f"Failed to convert an input value to a {input_type} value",
                    f"{name}, {value}, {exc}", input_name=name, input_config=info,
                    received_value=value, exception_message=str(exc),
                ))
                return
            node["inputs"][name] = value
        if node["class_type"] == "LoadImage" and name == "image":
            if self.storage.input_path(str(value)) is None:
                errors.append(_error("custom_validation_failed", "Custom validation failed for node",
                                     f"{name} - Invalid image file: {value}", input_name=name))
            return
        if "min" in options and value < options["min"]:
            errors.append(_error("value_smaller_than_min", f"Value {value} smaller than min of {options['min']}",
                                 name, input_name=name, input_config=info, received_value=value))
        if "max" in options and value > options["max"]:
            errors.append(_error("value_bigger_than_max", f"Value {value} bigger than max of {options['max']}",
                                 name, input_name=name, input_config=info, received_value=value))
        if isinstance(input_type, list) or input_type == "COMBO":
            choices = options.get("options", []) if input_type == "COMBO" else input_type
            if value not in choices:
                long_list = len(choices) > COMBO_LIST_LIMIT
                listing = f"(list of length {len(choices)})" if long_list else str(choices)
                errors.append(_error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listing}",
                                     input_name=name, input_config=None if long_list else info,
                                     received_value=value))


def validate_prompt(prompt: Any, partial_targets: list[str] | None, catalog: Catalog, storage: Storage) -> ValidationResult:
    """Validate a graph; raise PromptRejected, or return the outputs to run and partial errors."""
    if not isinstance(prompt, dict):
        raise PromptRejected("invalid_prompt", "Prompt is not a JSON object.")
    outputs = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            raise PromptRejected("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                                 f"Node ID '#{node_id}'")
        class_type = node["class_type"]
        if not catalog.has(class_type):
            raise PromptRejected("invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                                 f"Node ID '#{node_id}'")
        if catalog.is_output_node(class_type) and (partial_targets is None or node_id in partial_targets):
            outputs.append(node_id)
    if not outputs:
        raise PromptRejected("prompt_no_outputs", "Prompt has no outputs")

    validator = _Validator(prompt, catalog, storage)
    good_outputs: list[str] = []
    node_errors: dict[str, Any] = {}
    for output_id in outputs:
        try:
            valid = validator.validate_node(output_id)
        except Exception as exc:
            valid = False
            validator.validated[output_id] = (False, [_error(
                "exception_during_validation", "Exception when validating node", str(exc),
                exception_type=type(exc).__name__, traceback=traceback.format_tb(exc.__traceback__),
            )])
        if valid:
            good_outputs.append(output_id)
            continue
        for node_id, (node_valid, reasons) in validator.validated.items():
            if not node_valid and reasons:
                entry = node_errors.setdefault(node_id, {
                    "errors": reasons, "dependent_outputs": [], "class_type": prompt[node_id]["class_type"],
                })
                entry["dependent_outputs"].append(output_id)
    if not good_outputs:
        raise PromptRejected("prompt_outputs_failed_validation", "Prompt outputs failed validation", "", node_errors)
    return ValidationResult(good_outputs, node_errors)
