"""Fixtures of the study tests: one small finished study folder, built once per test process."""

from __future__ import annotations

import pytest

from tests.study.finished import build


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory):
    """The folder of a finished small study (see tests/study/finished.py); copy it before damaging it."""
    return build(tmp_path_factory.mktemp("finished"))
