"""Read template.yaml the way CloudFormation would, for the few things tests need.

Function environments are resolved from the template itself (Globals merged
with the function's own variables, Parameters at their defaults), so a test
runs a handler with exactly what a deploy with default Parameters gives it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"


@cache
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml_parse(TEMPLATE_PATH.read_text())
    return loaded


def parameter_defaults() -> dict[str, Any]:
    return {name: spec.get("Default") for name, spec in template()["Parameters"].items()}


def resource(logical_id: str) -> dict[str, Any]:
    found: dict[str, Any] = template()["Resources"][logical_id]
    return found


class Resolver:
    """Evaluate the intrinsic functions template.yaml uses in function environments."""

    def __init__(self, physical: dict[str, str], overrides: dict[str, Any] | None = None) -> None:
        self.parameters = {**parameter_defaults(), **(overrides or {})}
        self.physical = physical

    def condition(self, name: str) -> bool:
        return bool(self.resolve(template()["Conditions"][name]))

    def resolve(self, value: Any) -> Any:  # noqa: PLR0911 - one branch per intrinsic
        if not isinstance(value, dict) or len(value) != 1:
            return value
        ((key, arg),) = value.items()
        if key == "Ref":
            if arg in self.parameters:
                parameter = self.parameters[arg]
                if template()["Parameters"][arg]["Type"] == "CommaDelimitedList":
                    return str(parameter).split(",")
                return parameter
            return self.physical[arg]
        if key == "Fn::GetAtt":
            attribute = arg if isinstance(arg, str) else ".".join(arg)
            return self.physical[attribute]
        if key == "Fn::Join":
            separator, items = arg
            return separator.join(str(item) for item in self.resolve(items))
        if key == "Fn::If":
            name, when_true, when_false = arg
            return self.resolve(when_true if self.condition(name) else when_false)
        if key == "Fn::Equals":
            left, right = (self.resolve(item) for item in arg)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        raise NotImplementedError(f"intrinsic {key} in a function environment")


def function_environment(
    logical_id: str, physical: dict[str, str], overrides: dict[str, Any] | None = None
) -> dict[str, str]:
    resolver = Resolver(physical, overrides)
    variables = {
        **template()["Globals"]["Function"]["Environment"]["Variables"],
        **resource(logical_id)["Properties"].get("Environment", {}).get("Variables", {}),
    }
    return {name: str(resolver.resolve(value)) for name, value in variables.items()}


def function_code(logical_id: str) -> tuple[Path, str, str]:
    """(app file, module attribute, handler function) of a function, from CodeUri and Handler."""
    properties = resource(logical_id)["Properties"]
    module, function = properties["Handler"].rsplit(".", 1)
    return ROOT / properties["CodeUri"] / f"{module}.py", module, function


def function_ids() -> list[str]:
    return [
        logical_id
        for logical_id, spec in template()["Resources"].items()
        if spec["Type"] == "AWS::Serverless::Function"
    ]
