"""Debian binaries the ops tests run (Prometheus, promtool, Chromium).

``.ci/run`` installs them with apt-get.  In CI (``CI=true``) a missing one
fails the test; on a developer machine without it the test is skipped and
says how to install it.
"""
from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
PACKAGE = {"prometheus": "prometheus", "promtool": "prometheus", "chromium": "chromium"}


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        package = PACKAGE.get(binary, binary)
        if IN_CI:
            pytest.fail(f"{binary} is not installed: .ci/run installs it (apt-get install {package})")
        pytest.skip(f"{binary} is not installed (apt-get install {package}); CI runs this test")
    return path
