"""Fixtures for the job-runner tests (helpers live in jobhelpers.py)."""

from __future__ import annotations

import copy

import pytest
from jobhelpers import small_job


@pytest.fixture
def job_doc(tmp_path):
    return copy.deepcopy(small_job(tmp_path / "out"))
