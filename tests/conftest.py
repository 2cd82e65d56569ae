"""Fixtures shared by the core engine's tests: both stores, worker processes, helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent
APPS_DIR = TESTS_DIR / "apps"

# Shared helpers live in core_util.py beside this file; test modules import it by name.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from cli_forks import ForkServer, run_fresh  # noqa: E402
from core_util import end_process  # noqa: E402

from wfcore import ECSWorkflowEngine  # noqa: E402


@pytest.fixture(params=["sqlite", "memory"])
def store_url(request: pytest.FixtureRequest, wfe_store_url: str) -> str:
    """The store URL of one test run: a temporary SQLite file, or ``memory://``."""
    return wfe_store_url if request.param == "sqlite" else "memory://"


@pytest.fixture
def make_engine(
    wfe_engine_factory: Callable[..., ECSWorkflowEngine], store_url: str
) -> Callable[..., ECSWorkflowEngine]:
    """Build engines on this run's store (both stores through ``store_url``)."""

    def make(**kwargs: Any) -> ECSWorkflowEngine:
        return wfe_engine_factory(store=store_url, **kwargs)

    return make


@pytest.fixture
def worker_env(tmp_path: Path, wfe_store_url: str) -> dict[str, str]:
    """Environment for worker processes: the test's store, the apps on the path."""
    env = dict(os.environ)
    env["WFE_STORE"] = wfe_store_url
    env["WFE_LOAD_PLUGINS"] = ""
    env["PYTHONPATH"] = os.pathsep.join(
        [str(APPS_DIR), str(TESTS_DIR.parent), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    env["WFE_TEST_DIR"] = str(tmp_path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def start_worker(tmp_path: Path, worker_env: dict[str, str]) -> Iterator[Callable[..., Any]]:
    """Start ``tests/apps/run_worker.py APP [--forever]`` as a real process.

    Every process started is killed (if still running) and reaped after the test.
    """
    procs: list[subprocess.Popen[bytes]] = []

    def start(app: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, str(APPS_DIR / "run_worker.py"), app, *args],
            env={**worker_env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        end_process(proc)


def _cli_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(TESTS_DIR / "cli_apps"), WFE_LOAD_PLUGINS="")


def _has_pidfds() -> bool:
    """Whether this system has process file descriptors (Linux 5.3 and later), which
    the fork server waits for its commands with."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


@pytest.fixture(scope="session")
def cli_forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer | None]:
    """The fork server the ``wfe`` fixture runs its commands with (see cli_forks.py);
    None when there is none: ``WFE_TEST_FORKS=0``, or not on Linux."""
    if os.environ.get("WFE_TEST_FORKS") == "0" or not _has_pidfds():
        yield None
        return
    server = ForkServer(tmp_path_factory.mktemp("forks"), _cli_env())
    yield server
    server.close()


@pytest.fixture
def wfe(tmp_path: Path, cli_forks: ForkServer | None):
    """Run `wfe ...` with the test's store and the CLI apps importable: as
    ``python -m wfcore.cli``, forked from a server that has imported it (see
    cli_forks.py)."""
    # A temporary folder of its own: a starting worker sweeps the command work folders
    # of dead workers from it, and logs that, so another test's must not be there.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = dict(_cli_env(), WFE_STORE=f"sqlite://{tmp_path / 'wfe.db'}", TMPDIR=str(private_tmp))

    def run(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
        cwd = kwargs.pop("cwd", tmp_path)
        run_env = kwargs.pop("env", env)
        timeout = kwargs.pop("timeout", 60)
        if cli_forks is not None and cli_forks.fits(run_env) and set(kwargs) <= {"input"}:
            result = cli_forks.run(args, env=run_env, cwd=cwd, timeout=timeout, **kwargs)
        else:
            result = run_fresh(args, cwd=cwd, env=run_env, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"wfe {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result

    run.env = env  # type: ignore[attr-defined]
    return run
