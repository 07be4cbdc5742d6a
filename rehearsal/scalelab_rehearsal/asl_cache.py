"""State machine definitions parsed once, kept per digest of the definition.

moto's Step Functions interpreter parses a definition with ANTLR when the state
machine is created (to validate it) and again when each execution starts: for
the lab's definition that is the costliest single step of a rehearsal (about
half a second on a cold parser). What the parse makes, the interpreter's tree
of components, depends only on the definition's text and on the code that
parses it, so it is kept in ``.rehearsal/asl/`` under a digest of exactly
those: the definition, moto's and ANTLR's versions and Python's. A changed
definition, or another moto, has another digest and is parsed afresh. Each
use unpickles its own copy, so an execution gets a tree no other execution has
touched, as after a fresh parse. An entry that cannot be read is parsed again
in its place.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import pickle
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

from scalelab_rehearsal import ROOT

PARSED = ROOT / ".rehearsal" / "asl"
LOG = logging.getLogger("scalelab.rehearsal")

_kept: dict[str, bytes] = {}
_lock = threading.Lock()


def digest(definition: str) -> str:
    """What the parse depends on: the definition, and the versions of the code that parses it."""
    versions = " ".join(
        [f"{name} {importlib.metadata.version(name)}" for name in ("moto", "antlr4-python3-runtime")]
        + [f"python {sys.version_info.major}.{sys.version_info.minor}"]
    )
    return hashlib.sha256(f"{versions}\n{definition}".encode()).hexdigest()


def parse(definition: str, folder: Path = PARSED) -> Any:
    """The interpreter's program for ``definition``, as ``AmazonStateLanguageParser`` makes it,
    from the kept parse when there is one. A definition that does not parse raises as the parser does."""
    key = digest(definition)
    kept = folder / f"{key}.pickle"
    with _lock:
        pickled = _kept.get(key)
    if pickled is None:
        pickled = _read(kept)
    if pickled is not None:
        try:
            return pickle.loads(pickled)  # noqa: S301 - only entries this module wrote, in .rehearsal/
        except Exception:  # a damaged entry: parsed again and replaced
            LOG.warning("the kept parse %s does not load; parsing the definition again", kept, exc_info=True)
    program = AmazonStateLanguageParser.parse(definition)[0]
    pickled = pickle.dumps(program)
    folder.mkdir(parents=True, exist_ok=True)
    # Whole or not at all, even with rehearsals in several processes and threads at once.
    partial = kept.with_suffix(f".{os.getpid()}-{threading.get_ident()}.partial")
    partial.write_bytes(pickled)
    partial.replace(kept)
    with _lock:
        _kept[key] = pickled
    return program


def _read(kept: Path) -> bytes | None:
    try:
        pickled = kept.read_bytes()
    except FileNotFoundError:
        return None
    with _lock:
        _kept[kept.stem] = pickled
    return pickled


def forget() -> None:
    """Drop what this process keeps in memory (the files stay)."""
    with _lock:
        _kept.clear()


def install() -> Callable[[], None]:
    """moto's two parses (validating a new state machine, starting an execution) through ``parse``;
    returns the undo."""
    validate = StepFunctionsParserBackend.__dict__["_validate_definition"]
    entrypoint = ExecutionWorker._get_evaluation_entrypoint

    def validate_definition(definition: str) -> None:
        try:
            parse(definition)
        except Exception:
            validate.__func__(definition)  # moto's own error for a definition that does not parse
            raise

    def get_evaluation_entrypoint(self: ExecutionWorker) -> Any:
        return parse(self._evaluation_details.state_machine_details.definition)

    StepFunctionsParserBackend._validate_definition = staticmethod(validate_definition)  # type: ignore[method-assign]
    ExecutionWorker._get_evaluation_entrypoint = get_evaluation_entrypoint  # type: ignore[method-assign]

    def undo() -> None:
        StepFunctionsParserBackend._validate_definition = validate  # type: ignore[method-assign]
        ExecutionWorker._get_evaluation_entrypoint = entrypoint  # type: ignore[method-assign]

    return undo
