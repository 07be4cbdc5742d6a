"""How long each handler's cold import takes, beside importing boto3 and creating one client.

Lambda bills a function's init, and the first call of every step waits for it.
The yardstick is what the least a Python function talking to AWS pays: ``import
boto3`` and one client (DynamoDB, the run table every handler uses). For each of
``--pairs`` rounds, one fresh process times that and one fresh process per
handler times ``import app`` as Lambda's runtime does it: the function's folder
first on ``sys.path``, then the layer (``sam build``'s ``ScalelabLayer/python``
in ``--build-dir`` when it exists, otherwise ``layers/scalelab`` from the
source tree), then the standard library, and the interpreter's own packages only for the source
tree (the built layer has every dependency, as in Lambda); with the function's deployed
environment (its ``Environment`` after the rehearsal's deploy, and the variables
Lambda itself sets, so Powertools' Tracer is on, as with ``Tracing: Active``).
Lambda's runtime has neither awscrt nor pyOpenSSL, which botocore and urllib3 import
when they find them (this checkout's development environment has both, for moto): the child
hides them, else they add about 50 ms to boto3's side and to every handler's alike.
Only the import is timed, inside the process, so interpreter start-up is not
counted for either. Each handler's figure is the median of its per-round
ratios (handler / boto3 and one client of the same round), which cancels what
the shared machine does between rounds.

    python rehearsal/bench_imports.py [--pairs N] [--build-dir .aws-sam/build]

Prints the figures and whether every handler is within the target; it never fails
on the target, only when a handler does not import.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.3
YARDSTICK_SERVICE = "dynamodb"

# Run in a fresh interpreter with -I -S: nothing from this checkout's virtual environment's
# start-up (.pth files, PYTHONPATH) is loaded; sys.path is set as Lambda sets it.
_CHILD = """
import sys, time
sys.path[:0] = {path!r}
for absent in {absent!r}:
    sys.modules[absent] = None
started, cpu = time.perf_counter(), time.process_time()
{body}
print(time.perf_counter() - started, time.process_time() - cpu)
"""
_YARDSTICK = f"import boto3\nboto3.client({YARDSTICK_SERVICE!r})"
_HANDLER = "import app\napp.lambda_handler"
# What every handler here imports and makes before a line of scalelab runs: the yardstick, pydantic
# (the handlers parse their events with it) and Powertools' Logger, Metrics and Tracer as
# scalelab.core.observability makes them (the Tracer imports the X-Ray SDK). Printed as its own
# row, in a handler's environment (so the Tracer is on), to show how much of each handler's
# ratio the layer's own code adds.
_FLOOR = (
    f"{_YARDSTICK}\n"
    "from pydantic import BaseModel\n"
    "from aws_lambda_powertools import Logger, Metrics, Tracer\n"
    "Logger(); Metrics(); Tracer(patch_modules=('botocore', 'httplib'))"
)
# In this checkout's environment, not in Lambda's runtime (see the docstring).
NOT_IN_LAMBDA = ("awscrt", "OpenSSL")
FLOOR_ROW = "+ pydantic, Powertools"


@dataclass(frozen=True)
class Function:
    name: str  # logical id in template.yaml
    code_dir: Path
    environment: dict[str, str]


def deployed_functions() -> list[Function]:
    """Every function of the stack with its deployed environment, from one rehearsal deploy."""
    sys.path[:0] = [str(ROOT / "rehearsal")]
    # Imported here: only this step needs moto and the rehearsal.
    from moto.awslambda.utils import get_backend  # noqa: PLC0415
    from scalelab_rehearsal.emulator import ACCOUNT, REGION, Emulator  # noqa: PLC0415
    from scalelab_rehearsal.runtime import lambda_environment  # noqa: PLC0415

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the emulator's request log
    functions = []
    with Emulator() as emulator:
        assert emulator.stack is not None
        logical = {physical: name for name, physical in emulator.stack.resources.items()}
        for fn in get_backend(ACCOUNT, REGION).list_functions():
            code_dir = emulator.stack.code_dirs[fn.function_name]
            variables = {**lambda_environment(fn, code_dir), **(fn.environment_vars or {})}
            environment = {name: str(value) for name, value in variables.items()}
            functions.append(Function(logical[fn.function_name], code_dir, environment))
    return sorted(functions, key=lambda function: function.name)


def layer_path(build_dir: Path) -> tuple[list[str], str]:
    """The layer's folder and, for the source tree, the interpreter's packages after it (the
    layer's dependencies come from there); the built layer has every dependency, as in Lambda."""
    built = build_dir / "ScalelabLayer" / "python"
    if built.is_dir():
        shown = built.relative_to(ROOT) if built.is_relative_to(ROOT) else built
        return [str(built)], f"the built layer ({shown}), without this interpreter's packages"
    packages = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return (
        [str(ROOT / "layers" / "scalelab"), *packages],
        "the source tree (layers/scalelab, then this interpreter's packages; "
        "run `make build` for the built layer)",
    )


def _seconds(path: list[str], body: str, environment: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of ``body`` in a fresh interpreter with ``path`` first on sys.path."""
    script = _CHILD.format(path=path, body=body, absent=NOT_IN_LAMBDA)
    finished = subprocess.run(  # noqa: S603 - this interpreter and our own script, no shell
        [sys.executable, "-I", "-S", "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"import failed: {' | '.join(finished.stderr.strip().splitlines()[-3:])}")
    wall, cpu = finished.stdout.split()[-2:]
    return float(wall), float(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time each handler's cold import beside boto3 and one client."
    )
    parser.add_argument("--pairs", type=int, default=10, metavar="N", help="rounds to time (default: 10)")
    parser.add_argument(
        "--build-dir", type=Path, default=ROOT / ".aws-sam" / "build", help="sam build's output folder"
    )
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")

    out = sys.stdout
    layer, layer_text = layer_path(args.build_dir)
    functions = deployed_functions()
    base = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    out.write(
        f"scalelab handler cold imports: {args.pairs} rounds, each a fresh process per handler and one for "
        f"`import boto3; boto3.client({YARDSTICK_SERVICE!r})`\n"
        f"Python {sys.version.split()[0]} on {os.cpu_count()} cores; the layer from {layer_text}\n\n"
    )
    # Per round: (wall, CPU) of boto3 and one client, and of each handler's import.
    yardstick: list[tuple[float, float]] = []
    imports: dict[str, list[tuple[float, float]]] = {function.name: [] for function in functions}
    imports[FLOOR_ROW] = []
    for _ in range(args.pairs):
        yardstick.append(_seconds(layer, _YARDSTICK, base))
        imports[FLOOR_ROW].append(_seconds(layer, _FLOOR, {**base, **functions[0].environment}))
        for function in functions:
            path = [str(function.code_dir), *layer]
            imports[function.name].append(_seconds(path, _HANDLER, {**base, **function.environment}))

    def median(figures: list[tuple[float, float]], which: int) -> float:
        return statistics.median(figure[which] for figure in figures)

    def ratio(name: str, which: int) -> float:
        return statistics.median(
            mine[which] / bare[which] for mine, bare in zip(imports[name], yardstick, strict=True)
        )

    out.write(f"{'':<24} {'wall (s)':>9} {'ratio':>6} {'CPU (s)':>9} {'ratio':>6}\n")
    bare_wall, bare_cpu = median(yardstick, 0), median(yardstick, 1)
    out.write(f"{'boto3 + one client':<24} {bare_wall:>9.3f} {1:>6.2f} {bare_cpu:>9.3f} {1:>6.2f}\n")
    out.write(
        f"{FLOOR_ROW:<24} {median(imports[FLOOR_ROW], 0):>9.3f} {ratio(FLOOR_ROW, 0):>6.2f} "
        f"{median(imports[FLOOR_ROW], 1):>9.3f} {ratio(FLOOR_ROW, 1):>6.2f}\n"
    )
    worst = 0.0
    for function in functions:
        name = function.name
        worst = max(worst, ratio(name, 0))
        out.write(
            f"{name:<24} {median(imports[name], 0):>9.3f} {ratio(name, 0):>6.2f} "
            f"{median(imports[name], 1):>9.3f} {ratio(name, 1):>6.2f}"
            f"{'' if ratio(name, 0) <= TARGET_RATIO else '  over'}\n"
        )
    verdict = "met" if worst <= TARGET_RATIO else "NOT met"
    out.write(
        f"\ntarget: every handler's import within {TARGET_RATIO:g}x of boto3 and one client, wall time, "
        f"median of the paired rounds: {verdict} (worst {worst:.2f}x). The CPU ratio is the same "
        "measure without the waits a busy shared machine adds.\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
