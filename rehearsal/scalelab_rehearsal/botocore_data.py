"""botocore's data files, read once per rehearsal process instead of once per session.

botocore keeps what it reads from its data files (the endpoints, each service's
model, some megabytes of JSON for EC2) in a cache of the ``Loader``, and every
new session makes a ``Loader`` of its own. In AWS that happens once per Lambda
sandbox; the rehearsal is one process playing moto, Step Functions' task
clients and every function's cold start, which made a session each and read the
same files again: about a third of a rehearsal's CPU time went to parsing that
JSON. One loader per data path serves them all. What a loader returns is
botocore's read-only data, which one session already shares between all its
clients, so sharing it between sessions changes no answer.
"""

from __future__ import annotations

import functools

import botocore.loaders
import botocore.session

_create_loader = botocore.loaders.create_loader


@functools.cache
def shared_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
    """botocore's ``create_loader``, one loader per data path for the whole process."""
    return _create_loader(search_path_string)


def share() -> None:
    """Make every botocore session, and moto, which binds the name at its import, use ``shared_loader``."""
    botocore.loaders.create_loader = shared_loader
    botocore.session.create_loader = shared_loader
