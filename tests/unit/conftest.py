"""Unit tests run without Ray and without servers: this fixture makes sure of the first."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    ray = sys.modules.get("ray")
    if ray is not None:

        def forbidden(*args: object, **kwargs: object) -> None:
            raise AssertionError("a unit test tried to start Ray: move it to tests/integration")

        monkeypatch.setattr(ray, "init", forbidden)
