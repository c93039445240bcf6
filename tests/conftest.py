"""Shared test setup: tests import the slow reference module from this folder; the ``prepare`` fixture.

Every test runs under :func:`process_state_unchanged`: a test may not leave the environment,
torch's thread count, the TF32 flags or the working directory changed (the suite runs in random
order, so a leak would change later tests). Leaked environment, threads or cwd fail the test and
are restored; the TF32 flags, which the library turns off on purpose for float32
(``diffseg.devices.resolve_dtype``), are restored.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(2)


def _tf32() -> tuple[bool, bool, str]:
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())


def _set_tf32(state: tuple[bool, bool, str]) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = state[0], state[1]
    torch.set_float32_matmul_precision(state[2])


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}  # pytest's own, per phase


@pytest.fixture(scope="session", autouse=True)
def torch_lazy_environment():
    """torch sets ``TORCHINDUCTOR_CACHE_DIR`` the first time anything asks for inductor's cache folder
    (which diffusers' model building can do): done once here, before the first test, so that it is not
    a leak of whichever test happens to run first; the variable is restored when the session ends."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    cache_dir()
    yield
    if before is None:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def process_state_unchanged():
    env, threads, tf32, cwd = _environment(), torch.get_num_threads(), _tf32(), os.getcwd()
    yield
    leaks = []
    now = _environment()
    if now != env:
        changed = sorted(k for k in env.keys() | now.keys() if env.get(k) != now.get(k))
        leaks.append(f"environment variables {changed}")
        for key in now.keys() - env.keys():
            del os.environ[key]
        os.environ.update(env)
    if torch.get_num_threads() != threads:
        leaks.append(f"torch threads {threads} -> {torch.get_num_threads()}")
        torch.set_num_threads(threads)
    if os.getcwd() != cwd:
        leaks.append(f"working directory {cwd} -> {os.getcwd()}")
        os.chdir(cwd)
    _set_tf32(tf32)
    if leaks:
        pytest.fail("the test left process-wide state changed (restored now): " + "; ".join(leaks))


@pytest.fixture
def prepare():
    """``datasets/prepare.py`` (a script, not a package) loaded afresh as a module."""
    script = Path(__file__).resolve().parents[1] / "datasets" / "prepare.py"
    spec = importlib.util.spec_from_file_location("prepare_under_test", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
