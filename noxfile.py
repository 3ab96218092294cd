"""nox sessions: one test session per framework (each its own virtualenv), equivalence, lint, bench.

Plain ``nox`` runs every test session, then ``equivalence`` (and ``lint``).
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
BUNDLES = ROOT / ".nox" / "bundles"

#: what each framework's environment installs besides the core; MXNet 1.9.1 imports only with numpy<1.24
FRAMEWORKS = {
    "numpy": [],
    "torch": ["./backends/torch", "torch==2.13.0"],
    "tensorflow": ["./backends/tensorflow", "tensorflow-cpu>=2.16"],
    "jax": ["./backends/jax", "jax"],
    "mxnet": ["./backends/mxnet", "mxnet==1.9.1", "numpy==1.23.5"],
    "dask": ["./backends/dask", "dask[array]", "distributed", "dask-image"],
}
#: environment each framework's tests run with
SESSION_ENV = {
    "jax": {"JAX_ENABLE_X64": "1"},  # the suite checks float64 too; tests/backends/test_jax.py covers x64 off
    "tensorflow": {"TF_CPP_MIN_LOG_LEVEL": "2"},
    "mxnet": {"MXNET_SUBGRAPH_VERBOSE": "0", "MXNET_ENFORCE_DETERMINISM": "1"},
}

nox.options.sessions = [f"tests-{name}" for name in FRAMEWORKS] + ["equivalence", "lint"]
nox.options.reuse_existing_virtualenvs = True


def _install(session: nox.Session, name: str, *extra: str) -> None:
    # One pip call so that the resolver sees every pin (numpy<1.24 for MXNet) at once.
    session.install(".[test]", *FRAMEWORKS[name], *extra)


for _name in FRAMEWORKS:

    @nox.session(name=f"tests-{_name}")
    def tests(session: nox.Session, name: str = _name) -> None:
        _install(session, name)
        env = {"CONVLAB_TEST_BACKENDS": name, **SESSION_ENV.get(name, {})}
        session.run("pytest", "--backend", name, *session.posargs, env=env)
        BUNDLES.mkdir(parents=True, exist_ok=True)
        session.run("convlab", "compare", "--backends", name, "--save", str(BUNDLES / f"{name}.npz"), env=env)


@nox.session
def equivalence(session: nox.Session) -> None:
    """Compare the bundles every test session saved: each backend against the reference and each other."""
    session.install(".")
    bundles = [str(BUNDLES / f"{name}.npz") for name in FRAMEWORKS]
    session.run("convlab", "compare", "--load", *bundles, "--require", *FRAMEWORKS)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the tree; mypy over the core (it ships py.typed: its annotations are a promise) and the adapters."""
    session.install("ruff==0.17.6", "mypy", "numpy")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


for _name in FRAMEWORKS:

    @nox.session(name=f"bench-{_name}", default=False)
    def bench_one(session: nox.Session, name: str = _name) -> None:
        _install(session, name, "scipy", "matplotlib")
        session.run("python", "benchmarks/run.py", "--backend", name, *session.posargs, env=SESSION_ENV.get(name))


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Every backend's benchmark, each in its own environment, then the combined table and plot."""
    for name in FRAMEWORKS:
        session.notify(f"bench-{name}", session.posargs)
    session.notify("bench-report")


@nox.session(name="bench-report", default=False)
def bench_report(session: nox.Session) -> None:
    session.install(".", "matplotlib")
    session.run("python", "benchmarks/report.py", *session.posargs)
