"""The model-based checker (tests/checker.py), bounded for CI: a few
random sequences of operator actions against a real instance."""
import os

import pytest
from hypothesis import HealthCheck, settings

from .checker import Promises

Promises.TestCase.settings = settings(
    max_examples=int(os.environ.get("HOTPLATE_CHECKER_EXAMPLES", "3")),
    stateful_step_count=int(os.environ.get("HOTPLATE_CHECKER_STEPS", "8")),
    deadline=None, derandomize=not os.environ.get("HOTPLATE_CHECKER_EXAMPLES"),
    suppress_health_check=list(HealthCheck), database=None)

TestPromises = Promises.TestCase
TestPromises.pytestmark = [pytest.mark.timeout(1800)]  # (every example in one test; each command is bounded itself)
