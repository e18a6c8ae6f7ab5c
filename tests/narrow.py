"""Module fixtures that give a test file the narrow teachers (conftest's ``narrow_bench``) as its
``bench`` and ``clean_teacher``: ``from narrow import bench, clean_teacher``."""
import pytest


@pytest.fixture(scope="module")
def bench(narrow_bench):
    return narrow_bench


@pytest.fixture(scope="module")
def clean_teacher(narrow_bench):
    return narrow_bench.clean_teacher()
