"""Bad input, generated: every function does its job or names the bad field; none crashes.

Hypothesis generates execution inputs and mutates every function's sample
event (events/): a key dropped, a value replaced (by one of another JSON type,
or by anything), an unknown key added, or the whole event replaced. Each
handler is imported and invoked as test_events.py does it (file, function and
environment from template.yaml), so these are contract tests of the events.

The examples are derandomized (the same ones on every run, so CI is
reproducible). The examples of a test share one emulated account, because a
fresh one costs more than an example: Prepare creates nothing but items in
the run table, which its examples delete again; the other functions' examples
act on one prepared sample run, each like a retry of its state.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from scalelab.contracts.base import LAB_NAME_PATTERN, RUN_ID_PATTERN, SUBNET_ID_PATTERN
from scalelab.contracts.scaling import METRICS
from scalelab.core.errors import (
    ForeignResource,
    InvalidInput,
    NoInstancesInService,
    NoScaleIn,
    NoScaleOut,
    ScaleOutFailed,
    ScaleOutTooSlow,
    TargetsNotHealthy,
)
from scalelab.core.naming import run_id_from_execution
from scalelab.steps.scaleout import LAUNCH_SUCCESSFUL, LAUNCH_UNSUCCESSFUL, TERMINATE_SUCCESSFUL
from tests.conftest import REPORTS_BUCKET, TABLE_NAME, FakeLambdaContext
from tests.support.account import lab_resources
from tests.support.events import event_for, invoke, with_emulated_network
from tests.support.template import function_ids, parameter_defaults

# Derandomized and without an example database, so CI runs the same examples
# every time; no deadline, since moto's first call of a kind is slow. The
# function-scoped fixtures (the account, the handlers) are shared by a test's
# examples on purpose (see above), hence the health check is off.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# A sweep mutates every place in an event, each on its own: at least 6 sweeps, and
# for small events as many as make about 200 mutations. No shrinking: the failed
# assertion names the one mutation, and shrinking a sweep takes minutes.
SWEEPS = settings(FUZZ, max_examples=6, phases=[Phase.explicit, Phase.generate])
MUTATIONS_PER_FUNCTION = 200

Handlers = Callable[[str], ModuleType]

# ---- JSON values ------------------------------------------------------------------------

HUGE_INTEGERS = st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**30, -(10**30), 2**1024])
# ISO-8601 text, often at the calendar's ends and with the widest offsets.
WIDEST_OFFSET = timedelta(hours=23, minutes=59)
TIMESTAMPS = st.builds(
    lambda moment, offset: moment.replace(tzinfo=timezone(offset)).isoformat(),
    st.sampled_from([datetime.min, datetime.max]) | st.datetimes(),
    st.sampled_from([-WIDEST_OFFSET, WIDEST_OFFSET]) | st.timedeltas(-WIDEST_OFFSET, WIDEST_OFFSET),
)
# Longer than DynamoDB's 1024 bytes for a key, in ASCII and in two-byte UTF-8.
LONG_TEXT = st.sampled_from(["x" * 1100, "\u00e9" * 600])
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | HUGE_INTEGERS
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | TIMESTAMPS
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def json_kind(value: Any) -> str:
    """The JSON type of a value: a bool is not a number; an int and a float both are."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def of_another_kind(*kinds: str) -> st.SearchStrategy[Any]:
    return JSON_VALUES.filter(lambda value: json_kind(value) not in kinds)


# ---- paths into an event, and what a rejection must name -----------------------------------

Path = tuple[str | int, ...]


def dotted(path: Path) -> str:
    """A path the way InvalidInput names a field: ``lab.subnet_ids.0``."""
    return ".".join(str(part) for part in path)


def _field(text: str) -> str:
    return rf"(?<![\w.-]){re.escape(text)}(?![\w-])"


def names(message: str, path: Path) -> bool:
    """Whether an InvalidInput message names the field at ``path``.

    By its dotted path (or that of a field inside it), or, when a rule across
    fields failed, by its name in the message of its parent.
    """
    if re.search(_field(dotted(path)), message):
        return True
    parent = dotted(path[:-1]) or "(input)"
    return bool(re.search(_field(parent), message) and re.search(_field(str(path[-1])), message))


def names_something_of(message: str, event: Any, sample: dict[str, Any]) -> bool:
    """For a whole event replaced: a non-object is called one; otherwise a key of either is named."""
    if not isinstance(event, dict):
        return "expected a JSON object" in message
    return any(names(message, (key,)) for key in {*event, *sample})


def paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every key and list item in ``value``, depth first."""
    children = (
        value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    )
    for key, child in children:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def _at(value: Any, path: Path) -> Any:
    for part in path:
        value = value[part]
    return value


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_copy(child) for child in value]
    return value


# ---- the run table --------------------------------------------------------------------------


def table_items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = boto3.resource("dynamodb").Table(TABLE_NAME).scan()["Items"]
    return items


def empty_the_table() -> None:
    table = boto3.resource("dynamodb").Table(TABLE_NAME)
    with table.batch_writer() as batch:
        for item in table_items():
            batch.delete_item(Key={"pk": item["pk"], "sk": item["sk"]})


def locks() -> list[dict[str, Any]]:
    return [item for item in table_items() if item["sk"] == "LOCK"]


def run_record(run_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = (
        boto3.resource("dynamodb")
        .Table(TABLE_NAME)
        .get_item(Key={"pk": f"RUN#{run_id}", "sk": "RUN"})
        .get("Item")
    )
    return found


# =================================================================================================
# 1. The execution input: what Prepare receives as {"execution_name": ..., "input": ...}
# =================================================================================================

DEFAULTS = parameter_defaults()
ALLOWED_TYPES = str(DEFAULTS["AllowedInstanceTypes"]).split(",")
MAX_SIZE_CAP = int(DEFAULTS["MaxSizeCap"])
STRESS_CAP = int(DEFAULTS["StressDurationCapSeconds"])
# Each deadline at most a third of the cap, so any three of them fit it together.
DEADLINE_MAX = int(DEFAULTS["RunDeadlinesCapSeconds"]) // 3
HEALTH_PATH_PATTERN = r"^/[A-Za-z0-9._~/-]{0,1023}$"
SECTIONS = ("lab", "stress", "expectations", "timing")
EXPECTATIONS = ("healthy_within_seconds", "scale_out_within_seconds", "new_instance_healthy_within_seconds")


@st.composite
def group_sizes(draw: st.DrawFn) -> dict[str, int]:
    """Sizes a group can have and scale out from: min <= desired < max <= MaxSizeCap."""
    max_size = draw(st.integers(2, MAX_SIZE_CAP))
    desired = draw(st.integers(1, max_size - 1))
    return {"min_size": draw(st.integers(0, desired)), "desired_capacity": desired, "max_size": max_size}


LAB_FIELDS = {
    "name": st.from_regex(LAB_NAME_PATTERN, fullmatch=True),
    "instance_type": st.sampled_from(ALLOWED_TYPES),
    "app_port": st.integers(1024, 65535),
    "health_path": st.from_regex(r"/[A-Za-z0-9._~/-]{0,30}", fullmatch=True),
    "scaling": st.sampled_from(sorted(METRICS)).flatmap(
        lambda metric: st.fixed_dictionaries(
            {"metric": st.just(metric)},
            optional={
                "target": st.integers(int(METRICS[metric].minimum), int(METRICS[metric].maximum))
                | st.floats(METRICS[metric].minimum, METRICS[metric].maximum)
            },
        )
    ),
    # Given subnets must exist; an empty list means the default VPC's, like no list.
    "subnet_ids": st.just([]),
    "launch_template": st.none(),
}


@st.composite
def valid_run_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """Run input every rule accepts: any subset of the fields, each with a good value."""
    lab = draw(st.fixed_dictionaries({}, optional=LAB_FIELDS))
    if "scaling" not in lab and draw(st.booleans()):
        # The input before lab.scaling: a cpu target alone.
        lab["cpu_target_percent"] = draw(st.integers(1, 99) | st.floats(1, 99))
    if draw(st.booleans()):
        lab.update(draw(group_sizes()))
    return draw(
        st.fixed_dictionaries(
            {},
            optional={
                "lab": st.just(lab),
                "stress": st.fixed_dictionaries(
                    {}, optional={"duration_seconds": st.integers(180, STRESS_CAP)}
                ),
                "expectations": st.fixed_dictionaries(
                    {}, optional={name: st.integers(1, DEADLINE_MAX) for name in EXPECTATIONS}
                ),
                "timing": st.fixed_dictionaries({}, optional={"poll_seconds": st.integers(1, 3600)}),
            },
        )
    )


def bad_whole_number(low: int, high: int | None = None) -> st.SearchStrategy[Any]:
    """Not a whole number in [low, high]: another JSON type, any float, or out of range (huge too)."""
    out_of_range = st.integers(max_value=low - 1) | HUGE_INTEGERS.filter(lambda n: n < low)
    if high is not None:
        out_of_range |= st.integers(min_value=high + 1) | HUGE_INTEGERS.filter(lambda n: n > high)
    return of_another_kind("number") | st.floats() | out_of_range


def bad_text(pattern: str) -> st.SearchStrategy[Any]:
    return of_another_kind("string") | st.text(max_size=40).filter(
        lambda text: not re.fullmatch(pattern, text)
    )


WELL_FORMED_SUBNETS = st.from_regex(SUBNET_ID_PATTERN, fullmatch=True)
# Each field of the run input, with values its rules reject (sizes too large for the
# other sizes are caught by the rule across the three, which names them under "lab").
BAD_VALUES: dict[Path, st.SearchStrategy[Any]] = {
    **{(section,): of_another_kind("object") for section in SECTIONS},
    ("lab", "name"): bad_text(LAB_NAME_PATTERN),
    ("lab", "instance_type"): of_another_kind("string") | st.text().filter(lambda t: t not in ALLOWED_TYPES),
    ("lab", "min_size"): bad_whole_number(0) | HUGE_INTEGERS.filter(lambda n: n > MAX_SIZE_CAP),
    ("lab", "desired_capacity"): bad_whole_number(1) | HUGE_INTEGERS.filter(lambda n: n > MAX_SIZE_CAP),
    ("lab", "max_size"): bad_whole_number(1, MAX_SIZE_CAP),
    ("lab", "app_port"): bad_whole_number(1024, 65535),
    ("lab", "health_path"): bad_text(HEALTH_PATH_PATTERN),
    ("lab", "cpu_target_percent"): (
        of_another_kind("number")
        | HUGE_INTEGERS
        | st.floats().filter(lambda x: not 1 <= x <= 99)  # nan and both infinities among them
    ),
    ("lab", "scaling"): of_another_kind("object"),
    ("lab", "scaling", "metric"): of_another_kind("string") | st.text().filter(lambda t: t not in METRICS),
    ("lab", "scaling", "target"): (
        of_another_kind("number")
        | HUGE_INTEGERS
        | st.floats().filter(lambda x: not 1 <= x <= 99)  # the default metric is cpu
    ),
    ("lab", "subnet_ids"): (
        of_another_kind("array")
        | st.lists(st.text(max_size=20), min_size=1).filter(
            lambda ids: any(not re.fullmatch(SUBNET_ID_PATTERN, i) for i in ids)
        )
        # Well formed but not in this account, or the same one twice.
        | st.lists(WELL_FORMED_SUBNETS, min_size=1, max_size=3)
        | WELL_FORMED_SUBNETS.map(lambda subnet: [subnet, subnet])
    ),
    ("lab", "launch_template"): (
        of_another_kind("object", "null")
        | st.fixed_dictionaries({"version": st.just("$Default")})
        | st.fixed_dictionaries({"name": st.from_regex(r"[a-z]{3,20}", fullmatch=True)})  # none by that name
        | st.fixed_dictionaries(
            {"name": st.just("mine"), "version": bad_text(r"^(\$Latest|\$Default|[1-9][0-9]*)$")}
        )
    ),
    ("stress", "duration_seconds"): bad_whole_number(30, STRESS_CAP),
    **{("expectations", name): bad_whole_number(1, 86_400) for name in EXPECTATIONS},
    ("timing", "poll_seconds"): bad_whole_number(1, 3600),
}


@dataclass(frozen=True)
class BadInput:
    run_input: dict[str, Any]
    culprit: Path


def with_value(run_input: dict[str, Any], path: Path, value: Any) -> BadInput:
    changed = _copy(run_input)
    parent = changed
    for part in path[:-1]:
        parent = parent.setdefault(str(part), {})
    parent[str(path[-1])] = value
    return BadInput(changed, path)


KNOWN_KEYS = {*SECTIONS, *LAB_FIELDS, "min_size", "desired_capacity", "max_size", "duration_seconds"}
KNOWN_KEYS |= {*EXPECTATIONS, "poll_seconds"}


@st.composite
def bad_input_sweeps(draw: st.DrawFn) -> list[BadInput]:
    """A valid run input, then each of its fields made bad in turn, and an unknown key at each level."""
    run_input = draw(valid_run_inputs())
    found = [with_value(run_input, culprit, draw(bad)) for culprit, bad in BAD_VALUES.items()]
    for where in [(), *((section,) for section in SECTIONS)]:
        key = draw(st.text(max_size=12).filter(lambda k: k not in KNOWN_KEYS))
        found.append(with_value(run_input, (*where, key), draw(JSON_VALUES)))
    return found


@pytest.fixture
def prepare(run_table: Any, load_handler: Handlers, lambda_context: FakeLambdaContext) -> Callable[..., Any]:
    handler = load_handler("PrepareRunFunction")

    def run(event: Any) -> Any:
        return invoke(handler, "PrepareRunFunction", event, lambda_context)

    return run


def assert_rejected_without_a_trace(run_id: str, message: str, culprit: Path | None) -> None:
    """No lock taken, and the run's record says it was rejected and why."""
    assert locks() == []
    record = run_record(run_id)
    assert record is not None
    assert record["status"] == "rejected"
    assert record["reason"] == message[:4000]
    if culprit is not None:
        assert names(message, culprit), message


@FUZZ
@given(run_input=valid_run_inputs())
def test_a_valid_run_input_is_prepared_as_given(
    prepare: Callable[..., Any], run_input: dict[str, Any]
) -> None:
    try:
        config = prepare({"execution_name": "fuzz-valid", "input": run_input})

        for section, fields in run_input.items():
            for name, value in fields.items():
                if name == "cpu_target_percent":
                    assert config["lab"]["scaling"] == {"metric": "cpu", "target": value}
                elif name == "scaling":
                    assert config["lab"]["scaling"] | value == config["lab"]["scaling"], value
                elif name != "subnet_ids":
                    assert config[section][name] == value, (section, name)
        assert len(config["lab"]["subnet_ids"]) >= 2
        assert [lock["run_id"] for lock in locks()] == ["fuzz-valid"]
        assert (run_record("fuzz-valid") or {}).get("status") == "prepared"
    finally:
        empty_the_table()


@SWEEPS
@given(sweep=bad_input_sweeps())
def test_each_bad_field_of_a_run_input_is_rejected_naming_it_and_creates_nothing(
    prepare: Callable[..., Any], sweep: list[BadInput]
) -> None:
    try:
        for bad in sweep:
            try:
                prepare({"execution_name": "fuzz-bad", "input": bad.run_input})
            except InvalidInput as rejected:
                assert_rejected_without_a_trace("fuzz-bad", str(rejected), bad.culprit)
            else:
                pytest.fail(f"accepted {bad}")
        # Prepare never deletes anything: whatever one of these calls created would still be here.
        assert lab_resources() == {}
    finally:
        empty_the_table()


@FUZZ
@given(run_input=JSON_VALUES | st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=8), JSON_VALUES))
def test_any_json_as_run_input_is_prepared_or_rejected_naming_the_field(
    prepare: Callable[..., Any], run_input: Any
) -> None:
    try:
        try:
            config = prepare({"execution_name": "fuzz-json", "input": run_input})
        except InvalidInput as rejected:
            message = str(rejected)
            assert_rejected_without_a_trace("fuzz-json", message, None)
            assert lab_resources() == {}
            if not isinstance(run_input, dict):
                assert "invalid run input: expected a JSON object" in message
            else:
                for key, value in run_input.items():
                    if key not in SECTIONS or not isinstance(value, dict):
                        assert names(message, (key,)), message
        else:
            assert config["run_id"] == "fuzz-json"
    finally:
        empty_the_table()


@FUZZ
@given(name=st.text(max_size=100) | of_another_kind("string"))
def test_any_execution_name_becomes_a_run_id_or_is_rejected_naming_it(
    prepare: Callable[..., Any], name: Any
) -> None:
    try:
        if isinstance(name, str) and 1 <= len(name) <= 80:
            config = prepare({"execution_name": name, "input": {}})

            assert config["run_id"] == run_id_from_execution(name)
            assert re.fullmatch(RUN_ID_PATTERN, config["run_id"])
        else:
            with pytest.raises(InvalidInput) as rejected:
                prepare({"execution_name": name, "input": {}})

            assert names(str(rejected.value), ("execution_name",))
            # Without a name there is no run id to keep a record under.
            assert table_items() == []
            assert lab_resources() == {}
    finally:
        empty_the_table()


@FUZZ
@given(
    event=st.fixed_dictionaries(
        {}, optional={"execution_name": st.just("fuzz-keys"), "input": st.just({})}
    ).flatmap(
        lambda known: st.dictionaries(
            st.text(max_size=12).filter(lambda key: key not in {"execution_name", "input"}),
            JSON_VALUES,
            max_size=2,
        ).map(lambda unknown: {**known, **unknown})
    )
)
def test_a_prepare_event_with_missing_or_unknown_keys_is_rejected_naming_them(
    prepare: Callable[..., Any], event: dict[str, Any]
) -> None:
    unknown = [key for key in event if key not in {"execution_name", "input"}]
    try:
        if "execution_name" in event and not unknown:
            assert prepare(event)["run_id"] == "fuzz-keys"
        else:
            with pytest.raises(InvalidInput) as rejected:
                prepare(event)

            message = str(rejected.value)
            for key in unknown:
                assert names(message, (key,)), message
            if "execution_name" not in event:
                assert "execution_name: Field required" in message
            assert table_items() == []
            assert lab_resources() == {}
    finally:
        empty_the_table()


# =================================================================================================
# 2. Every other function's event, mutated from its sample in events/
# =================================================================================================


@dataclass(frozen=True)
class Mutation:
    """A sample event changed in one place: ``path`` is what a rejection must name (None: all of it)."""

    how: str
    event: Any
    path: Path | None


def same_kind(value: Any) -> st.SearchStrategy[Any]:
    """Any value of the JSON type of ``value``: the ones a type check lets through."""
    kind = json_kind(value)
    if kind == "string":
        return st.text(max_size=20) | TIMESTAMPS | LONG_TEXT
    if kind == "number":
        return st.integers() | HUGE_INTEGERS | st.floats(allow_nan=True, allow_infinity=True)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(JSON_VALUES, max_size=3)
    if kind == "object":
        return st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)
    return JSON_VALUES


@st.composite
def sweeps(draw: st.DrawFn, sample: dict[str, Any]) -> list[Mutation]:
    """One mutation at every place of the sample, each on its own copy, and the whole event replaced.

    At each key or item: dropped (a key), or a value of another JSON type, or any
    value of its own type; in each object, an unknown key. A sweep reaches every
    field of every event on every run; Hypothesis varies what is put there.
    """
    found = [Mutation("replace", draw(JSON_VALUES), None)]
    for path in paths(sample):
        event = _copy(sample)
        parent = _at(event, path[:-1])
        how = draw(
            st.sampled_from(
                ["drop", "retype", "revalue"] if isinstance(path[-1], str) else ["retype", "revalue"]
            )
        )
        if how == "drop":
            del parent[path[-1]]
        else:
            current = parent[path[-1]]
            parent[path[-1]] = draw(
                of_another_kind(json_kind(current)) if how == "retype" else same_kind(current)
            )
        found.append(Mutation(how, event, path))
    for where in [(), *(p for p in paths(sample) if isinstance(_at(sample, p), dict))]:
        event = _copy(sample)
        target = _at(event, where)
        key = draw(st.text(max_size=12).filter(lambda k, taken=target: k not in taken))
        target[key] = draw(JSON_VALUES)
        found.append(Mutation("add", event, (*where, key)))
    return found


def sweep_size(sample: dict[str, Any]) -> int:
    """How many mutations a sweep of ``sample`` makes: one per place, one per object, the whole event."""
    places = list(paths(sample))
    return 2 + len(places) + sum(isinstance(_at(sample, place), dict) for place in places)


# Every function in template.yaml but Prepare, whose event part 1 covers.
FUNCTIONS = [logical_id for logical_id in function_ids() if logical_id != "PrepareRunFunction"]
# A function's own failure for a well-formed event (its contract) is fine too: these are the only ones.
CONTRACT_ERRORS: dict[str, tuple[type[Exception], ...]] = {
    # A sweep provisions one run id again and again: once a mutation changed the app port, the
    # run's own security group no longer matches the config, and is refused rather than reused.
    "ProvisionLabFunction": (ForeignResource,),
    # The sample's targets are due long ago: a check now is past its deadline.
    "CheckTargetsFunction": (TargetsNotHealthy,),
    # The sample's group has no instances in the emulated account.
    "StartStressFunction": (NoInstancesInService,),
    # Nor any scaling activity, and no event was logged for the sample run.
    "CheckScaleOutFunction": (NoScaleOut, ScaleOutFailed, ScaleOutTooSlow),
    # The sample's scale-in deadline is long past, and no termination was logged either.
    "CheckScaleInFunction": (NoScaleIn,),
}


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on: a connection to it is refused at once."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


@pytest.fixture
def sample_run(
    run_table: Any, instance_profile: str, load_handler: Handlers, lambda_context: FakeLambdaContext
) -> None:
    """The account the sample events describe: run sample-run-0001 prepared, a reports bucket with
    the JSON report Judge writes for its sample event (PublishReport's sample names it)."""
    boto3.client("s3").create_bucket(Bucket=REPORTS_BUCKET)
    prepare = load_handler("PrepareRunFunction")
    invoke(prepare, "PrepareRunFunction", event_for("PrepareRunFunction"), lambda_context)
    judge = load_handler("JudgeRunFunction")
    invoke(judge, "JudgeRunFunction", event_for("JudgeRunFunction"), lambda_context)


def live_sample(logical_id: str, closed_port: int) -> dict[str, Any]:
    """The function's sample event, with ids that exist in the emulated account, as test_events does."""
    event = event_for(logical_id)
    if logical_id == "ProvisionLabFunction":
        return with_emulated_network(event)
    if logical_id == "CheckTargetsFunction":
        vpc = boto3.client("ec2").describe_vpcs()["Vpcs"][0]["VpcId"]
        created = boto3.client("elbv2").create_target_group(
            Name="scalelab-sample-run-0001", Protocol="HTTP", Port=3005, VpcId=vpc
        )
        return {**event, "target_group_arn": created["TargetGroups"][0]["TargetGroupArn"]}
    if logical_id == "ProbeAppFunction":
        # Should a mutation keep the event valid, the probe's requests are refused at once.
        return {**event, "url": f"http://127.0.0.1:{closed_port}/home"}
    return event


# Judge publishes its metrics on the way out; a rejected event has none, which Powertools warns of.
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_a_mutated_event_is_handled_or_rejected_naming_the_field(
    sample_run: None,
    load_handler: Handlers,
    lambda_context: FakeLambdaContext,
    closed_port: int,
    logical_id: str,
) -> None:
    handler = load_handler(logical_id)
    sample = live_sample(logical_id, closed_port)

    @settings(SWEEPS, max_examples=max(6, MUTATIONS_PER_FUNCTION // sweep_size(sample)))
    @given(sweep=sweeps(sample))
    def handled_or_named(sweep: list[Mutation]) -> None:
        for mutation in sweep:
            try:
                invoke(handler, logical_id, mutation.event, lambda_context)
            except InvalidInput as rejected:
                message = str(rejected)
                if mutation.path is None:
                    assert names_something_of(message, mutation.event, sample), (mutation, message)
                else:
                    assert names(message, mutation.path), (mutation, message)
            except CONTRACT_ERRORS.get(logical_id, ()):
                pass

    handled_or_named()


# =================================================================================================
# 3. Auto Scaling events for OnScalingEvent that no rule in test_scaleout.py generates
# =================================================================================================

RUN = "fuzz-0001"
TOKEN = "fuzz-task-token"
STRESS_STARTED = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
OUTCOMES = {"succeeded", "stale"}


def run_items(run_id: str = RUN) -> dict[str, dict[str, Any]]:
    return {item["sk"]: item for item in table_items() if item["pk"] == f"RUN#{run_id}"}


@dataclass(frozen=True)
class Scaling:
    """AwaitScaleOut and OnScalingEvent, each called as its handler."""

    awaiter: ModuleType
    listener: ModuleType
    context: FakeLambdaContext

    def wait(self) -> dict[str, Any]:
        """Store run RUN's task token, as the AwaitScaleOut task does once the stress started."""
        payload = {
            "run_id": RUN,
            "auto_scaling_group_name": f"scalelab-{RUN}",
            "task_token": TOKEN,
            "stress_started_at": STRESS_STARTED.isoformat(),
            # The sample launch event's instance is none of these, and its Cause grows 2 to 3.
            "instances_before": ["i-0a1b2c3d4e5f60010", "i-0a1b2c3d4e5f60011"],
            "desired_capacity": 2,
        }
        result: dict[str, Any] = invoke(self.awaiter, "AwaitScaleOutFunction", payload, self.context)
        return result

    def deliver(self, event: Any) -> dict[str, Any]:
        result: dict[str, Any] = invoke(self.listener, "OnScalingEventFunction", event, self.context)
        return result


@pytest.fixture
def scaling(run_table: Any, load_handler: Handlers, lambda_context: FakeLambdaContext) -> Scaling:
    return Scaling(
        load_handler("AwaitScaleOutFunction"), load_handler("OnScalingEventFunction"), lambda_context
    )


@pytest.fixture
def waiting_token(scaling: Scaling) -> Scaling:
    """Run RUN waiting for its scale-out, for every example of the test."""
    assert scaling.wait()["waiting"] is True
    return scaling


def aws_event(detail_type: str, detail: Any, event_id: str | None = None) -> dict[str, Any]:
    """AWS's documented launch event (events/), with this detail-type and detail."""
    sample = event_for("OnScalingEventFunction")
    return {**sample, "id": event_id or str(uuid.uuid4()), "detail-type": detail_type, "detail": detail}


OTHER_GROUPS = st.text(max_size=30).filter(lambda group: group != f"scalelab-{RUN}") | st.from_regex(
    RUN_ID_PATTERN, fullmatch=True
).filter(lambda run_id: run_id != RUN).map(lambda run_id: f"scalelab-{run_id}")
LAUNCH_LIKE_DETAILS = st.fixed_dictionaries(
    {"AutoScalingGroupName": OTHER_GROUPS},
    optional={
        "ActivityId": st.text(max_size=12),
        "StatusCode": st.text(max_size=12),
        "StatusMessage": st.text(max_size=12),
        "EC2InstanceId": st.text(max_size=12),
        "StartTime": TIMESTAMPS | JSON_SCALARS,
        "Details": JSON_VALUES,
    },
)


@FUZZ
@given(
    detail_type=st.sampled_from([LAUNCH_SUCCESSFUL, LAUNCH_UNSUCCESSFUL, TERMINATE_SUCCESSFUL]) | st.text(),
    detail=LAUNCH_LIKE_DETAILS | st.dictionaries(st.text(max_size=20), JSON_VALUES),
)
def test_no_event_about_another_group_touches_a_waiting_token(
    waiting_token: Scaling, detail_type: str, detail: Any
) -> None:
    try:
        result = waiting_token.deliver(aws_event(detail_type, detail))
    except InvalidInput:
        pass
    else:
        assert result.get("run_id") != RUN

    assert set(run_items()) == {"SCALEOUT_WAIT"}
    assert "completed_by" not in run_items()["SCALEOUT_WAIT"]


@dataclass(frozen=True)
class Launch:
    event_id: str
    detail_type: str
    started: datetime

    @property
    def qualifies(self) -> bool:
        # An unsuccessful launch is only logged: Auto Scaling tries again until the deadline.
        return self.detail_type == LAUNCH_SUCCESSFUL and self.started >= STRESS_STARTED

    def event(self) -> dict[str, Any]:
        started = self.started.isoformat().replace("+00:00", "Z")
        sample = event_for("OnScalingEventFunction")
        return aws_event(
            self.detail_type,
            {**sample["detail"], "AutoScalingGroupName": f"scalelab-{RUN}", "StartTime": started},
            self.event_id,
        )


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Launch], list[int], int]:
    """Some events of the run's group, delivered in any order, some twice, some never; the token's turn."""
    launches = [
        Launch(
            event_id=f"00000000-0000-4000-8000-{index:012d}",
            detail_type=draw(st.sampled_from([LAUNCH_SUCCESSFUL, LAUNCH_UNSUCCESSFUL, TERMINATE_SUCCESSFUL])),
            started=STRESS_STARTED + timedelta(minutes=draw(st.integers(-3, 6))),
        )
        for index in range(draw(st.integers(1, 4)))
    ]
    order = draw(st.lists(st.integers(0, len(launches) - 1), min_size=1, max_size=2 * len(launches)))
    return launches, order, draw(st.integers(0, len(order)))


def expected_claimant(launches: list[Launch], order: list[int], token_at: int) -> str | None:
    """scaleout.py's rule: the earliest qualifying launch logged before the token, else the next to come."""
    logged = [launches[i] for i in set(order[:token_at]) if launches[i].qualifies]
    if logged:
        earliest = min(logged, key=lambda e: (e.started, e.event_id))
        return earliest.event_id
    return next((launches[i].event_id for i in order[token_at:] if launches[i].qualifies), None)


@FUZZ
@given(plan=deliveries())
def test_in_any_order_with_duplicates_the_token_is_completed_once_by_the_rule(
    scaling: Scaling, plan: tuple[list[Launch], list[int], int]
) -> None:
    launches, order, token_at = plan
    try:
        told: list[str] = []
        seen: set[int] = set()
        for turn, index in enumerate([*order, None]):
            if turn == token_at:
                awaited = scaling.wait()
                told += [awaited["outcome"]] if awaited["outcome"] else []
            if index is not None:
                result = scaling.deliver(launches[index].event())
                assert result["duplicate"] is (index in seen)
                seen.add(index)
                told += [result["completion"]] if result["completion"] in OUTCOMES else []

        claimant = expected_claimant(launches, order, token_at)
        items = run_items()
        assert items["SCALEOUT_WAIT"].get("completed_by") == claimant
        # Step Functions is told once, whatever it answers for this made-up token.
        assert len(told) == (1 if claimant else 0), told
        assert sorted(sk for sk in items if sk.startswith("EVENT#")) == sorted(
            f"EVENT#{launches[i].event_id}" for i in seen
        )
    finally:
        empty_the_table()
