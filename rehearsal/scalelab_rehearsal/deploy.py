"""Deploy template.yaml into the emulated account, the way `sam deploy` would.

The SAM translator turns the template into CloudFormation; code folders are
zipped into the emulator's S3 (as `sam package` would upload them) and the ASL
is inlined; moto's CloudFormation then creates the stack, so every Ref,
GetAtt and ARN is CloudFormation's own resolution, not a second resolver.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import threading
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from moto.cloudformation.models import Stack as CloudFormationStack
from moto.stepfunctions.models import StateMachine
from moto.stepfunctions.responses import get_backend as stepfunctions_backend
from moto.stepfunctions.utils import cfn_to_api_tags
from samtranslator.yaml_helper import intrinsics_multi_constructor

from scalelab_rehearsal import ROOT

ARTIFACT_BUCKET = "scalelab-rehearsal-artifacts"
STACK_NAME = "scalelab"
TRANSLATIONS = ROOT / ".rehearsal" / "translations"


@dataclass(frozen=True)
class Stack:
    outputs: dict[str, str]
    # Logical id -> physical id of every resource CloudFormation made.
    resources: dict[str, str]
    # Physical function name -> the folder of its code.
    code_dirs: dict[str, Path]
    # Resource types the emulator cannot create, reported and skipped.
    skipped_types: list[str]


class _TemplateLoader(yaml.CSafeLoader):
    """The translator's YAML reading (short-form intrinsics like ``!Ref``), on libyaml:
    the translator's own ``yaml_parse`` is pure Python and ten times slower."""


_TemplateLoader.add_multi_constructor("!", intrinsics_multi_constructor)


def read_template() -> dict[str, Any]:
    template: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_TemplateLoader)  # noqa: S506 - a safe loader
    return template


class _NoManagedPolicies:
    """The translator's policy loader: this template names no AWS managed policy by name."""

    def load(self) -> dict[str, str]:
        return {}


def translate(template: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation that the SAM transform makes of a packaged template (see ``package``)."""
    # Imported here: the translator takes half a second to import, which a cached
    # translation (``translate_once``) does not need.
    from samtranslator.translator.transform import transform  # noqa: PLC0415

    translated: dict[str, Any] = transform(template, {}, _NoManagedPolicies())
    return translated


def _kept_translation(kept: Path) -> dict[str, Any] | None:
    """The translation kept at ``kept``; None when there is none or it is not a template (a file
    cut short or damaged), which is then translated and kept again."""
    try:
        cached = json.loads(kept.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):  # none kept yet; or not UTF-8, or not JSON
        return None
    if not isinstance(cached, dict) or not isinstance(cached.get("Resources"), dict):
        return None
    return cached


def translate_once(template: dict[str, Any]) -> dict[str, Any]:
    """``translate``, kept in ``.rehearsal/translations`` under a digest of the packaged template
    (its ASL inlined) and the translator's version, as ``sam build`` keeps what has not changed.
    An entry that does not parse is rebuilt in its place."""
    version = importlib.metadata.version("aws-sam-translator")
    digest = hashlib.sha256(f"{version}\n{json.dumps(template, sort_keys=True)}".encode()).hexdigest()
    kept = TRANSLATIONS / f"{digest}.json"
    cached = _kept_translation(kept)
    if cached is not None:
        return cached
    translated = translate(template)
    TRANSLATIONS.mkdir(parents=True, exist_ok=True)
    # Whole or not at all, even with two rehearsals at once: each writes its own partial file.
    partial = kept.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
    partial.write_text(json.dumps(translated))
    partial.replace(kept)
    return translated


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(folder))
    return buffer.getvalue()


def package(template: dict[str, Any], s3: Any) -> dict[str, Path]:
    """Upload every code folder and inline every ASL file; returns logical id -> code folder."""
    code_dirs: dict[str, Path] = {}
    s3.create_bucket(Bucket=ARTIFACT_BUCKET)
    for logical_id, spec in template["Resources"].items():
        properties = spec.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str) and not properties[key].startswith("s3://"):
                folder = ROOT / properties[key]
                s3.put_object(Bucket=ARTIFACT_BUCKET, Key=f"{logical_id}.zip", Body=_zip_folder(folder))
                properties[key] = f"s3://{ARTIFACT_BUCKET}/{logical_id}.zip"
                if spec["Type"] == "AWS::Serverless::Function":
                    code_dirs[logical_id] = folder
        if isinstance(properties.get("DefinitionUri"), str):
            properties["Definition"] = json.loads((ROOT / properties.pop("DefinitionUri")).read_text())
    return code_dirs


def _create_state_machines_as_aws_does() -> Callable[[], None]:
    """moto's CloudFormation ignores DefinitionSubstitutions and creates state machines in the
    backend its interpreter does not use; apply the substitutions and create them where
    StartExecution will find them."""
    original = StateMachine.__dict__["create_from_cloudformation_json"]

    def create(
        cls: Any, /, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **_: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        definition = properties.get("DefinitionString", "")
        for name, value in (properties.get("DefinitionSubstitutions") or {}).items():
            definition = definition.replace("${" + name + "}", str(value))
        return stepfunctions_backend(account_id, region_name).create_state_machine(
            properties.get("StateMachineName", resource_name),
            definition,
            properties.get("RoleArn", ""),
            tags=cfn_to_api_tags(properties.get("Tags", [])),
        )

    StateMachine.create_from_cloudformation_json = classmethod(create)  # type: ignore[method-assign,assignment]

    def undo() -> None:
        StateMachine.create_from_cloudformation_json = original  # type: ignore[method-assign]

    return undo


def _parse_json_templates_as_json() -> Callable[[], None]:
    """moto reads every template with PyYAML's pure-Python loader, 0.1 s for this one; a JSON
    template (what the rehearsal sends) reads the same with ``json``, at once."""
    original = CloudFormationStack.__dict__["parse_template"]

    def parse_template(template: str) -> dict[str, Any]:
        try:
            parsed: dict[str, Any] = json.loads(template)
        except ValueError:
            return original.__func__(template)  # type: ignore[no-any-return]
        return parsed

    CloudFormationStack.parse_template = staticmethod(parse_template)  # type: ignore[method-assign]

    def undo() -> None:
        CloudFormationStack.parse_template = original  # type: ignore[method-assign]

    return undo


class _Unsupported(logging.Handler):
    """Collects the resource types moto's CloudFormation says it cannot create."""

    def __init__(self) -> None:
        super().__init__()
        self.types: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("No Moto CloudFormation support for "):
            self.types.add(record.getMessage().rsplit(" ", 1)[-1])


def deploy(clients: Any, parameters: dict[str, str] | None = None, stack_name: str = STACK_NAME) -> Stack:
    """Create the scalelab stack in the emulator; ``clients(service)`` builds a client for it.
    Another ``stack_name`` deploys a second stack beside it, as a second `sam deploy` would."""
    template = read_template()
    # moto splits a CommaDelimitedList only when it is passed in, not at its default
    # (Fn::Join then joins its characters): pass every such list explicitly.
    parameters = {
        **{
            name: str(spec.get("Default", ""))
            for name, spec in template.get("Parameters", {}).items()
            if spec.get("Type") == "CommaDelimitedList"
        },
        **(parameters or {}),
    }
    code_by_logical_id = package(template, clients("s3"))
    translated = translate_once(template)
    cloudformation = clients("cloudformation")
    unsupported = _Unsupported()
    moto_logger = logging.getLogger("moto")
    moto_logger.addHandler(unsupported)
    moto_logger.propagate = False
    undo = _create_state_machines_as_aws_does()
    undo_parse = _parse_json_templates_as_json()
    try:
        # moto also warns once per resource it cannot create; they are reported together instead.
        warnings.filterwarnings(
            "ignore", message="Tried to parse .* not supported by moto", category=UserWarning
        )
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=json.dumps(translated),
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        )
    finally:
        undo_parse()
        undo()
        moto_logger.removeHandler(unsupported)
        moto_logger.propagate = True
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(
            f"the stack did not deploy: {stack['StackStatus']} {stack.get('StackStatusReason', '')}"
        )
    pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name)
    resources = {
        item["LogicalResourceId"]: item.get("PhysicalResourceId", "")
        for page in pages
        for item in page["StackResourceSummaries"]
    }
    return Stack(
        outputs={item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])},
        resources=resources,
        code_dirs={resources[logical_id]: folder for logical_id, folder in code_by_logical_id.items()},
        skipped_types=sorted(unsupported.types),
    )
