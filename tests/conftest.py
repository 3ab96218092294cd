"""The ``backend`` fixture: every test in tests/ runs once per selected, installed backend.

Select with ``pytest --backend torch --backend jax`` or ``CONVLAB_TEST_BACKENDS=torch,jax``; by
default every installed backend runs. A selected backend that is not installed is reported as a
skip (never as a pass).
"""

from __future__ import annotations

import os

import pytest

import convlab as cl


def pytest_addoption(parser):
    parser.addoption(
        "--backend",
        action="append",
        default=[],
        help="run the suite on this backend (repeatable); default: $CONVLAB_TEST_BACKENDS or all installed",
    )


def selected_backends(config) -> list:
    names = list(config.getoption("--backend"))
    if not names and os.environ.get("CONVLAB_TEST_BACKENDS"):
        names = [n.strip() for n in os.environ["CONVLAB_TEST_BACKENDS"].split(",") if n.strip()]
    if not names:
        names = [name for name, version in cl.backends().items() if not version.startswith("unavailable")]
    return names


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", selected_backends(metafunc.config), indirect=True)


@pytest.fixture
def backend(request) -> cl.Backend:
    """The Backend under test: tests use ``backend.asarray``/``backend.to_numpy`` and ``backend=backend.name``."""
    try:
        return cl.get_backend(request.param)
    except cl.BackendNotAvailableError as error:
        pytest.skip(f"backend {request.param} not installed: {error}")


@pytest.fixture
def supports_float64(backend) -> bool:
    try:
        backend.check_float64()
    except cl.ConvlabError:
        return False
    return True


def pytest_configure(config):
    config.addinivalue_line("markers", "only_backend(name): run only when name is among the selected backends")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """``pytestmark = pytest.mark.only_backend("jax")``: skipped, before any fixture starts, unless jax is selected."""
    for mark in item.iter_markers("only_backend"):
        if mark.args[0] not in selected_backends(item.config):
            pytest.skip(f"{mark.args[0]} is not among the selected backends")


def require_adapter(name: str) -> None:
    """At a test module's import, after its ``pytest.importorskip`` of the framework: the whole module skipped
    when convlab's adapter for the framework is not installed."""
    try:
        cl.get_backend(name)
    except cl.BackendNotAvailableError as error:
        pytest.skip(f"convlab-{name} not installed: {error}", allow_module_level=True)
