"""Checked-in files the lab's instances run (user data, the app, the stress script)."""

from __future__ import annotations

from importlib import resources

_ASSETS = resources.files("scalelab") / "assets"


def asset_text(name: str) -> str:
    return (_ASSETS / name).read_text(encoding="utf-8")
