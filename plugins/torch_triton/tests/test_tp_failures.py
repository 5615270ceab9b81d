"""A tensor-parallel engine that loses a rank says so in one sentence and leaves no process
behind: whether a worker dies while running, while starting, or the driver itself dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from lmforge.messages import PytorchEngineConfig
from lmforge.model.loader import load_model_info
from lmforge_torch_triton.parallel.workers import TensorParallelError
from lmforge_torch_triton.runner import TorchModelRunner
from torch_runner_helpers import TINY, PagedDriver, PagedSeq

WORKER = "lmforge_torch_triton.parallel.worker"


@pytest.fixture(scope="module")
def dummy_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dummy")
    config = {**TINY, "architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    (path / "config.json").write_text(json.dumps(config))
    return path


def _runner(path: Path) -> TorchModelRunner:
    info = load_model_info(path, load_format="dummy")
    return TorchModelRunner(info, PytorchEngineConfig(device="cpu", dtype="float32", tp=2))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the workers run in sessions of their own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and WORKER.encode() in cmdline:
                found.append(int(entry.name))
    return found


def _wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_close_ends_every_worker(dummy_model):
    runner = _runner(dummy_model)
    (proc,) = runner.workers.procs.values()
    runner.close()
    assert proc.returncode == 0 and not _alive(proc.pid)


def test_a_killed_worker_ends_the_engine_in_one_sentence(dummy_model):
    runner = _runner(dummy_model)
    try:
        driver = PagedDriver(runner, num_blocks=32)
        seq = PagedSeq()
        driver.step([(seq, [1, 5, 9])])
        (proc,) = runner.workers.procs.values()
        os.kill(proc.pid, signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(TensorParallelError) as caught:
            driver.step([(seq, [4])])
        assert str(caught.value) == (f"Tensor-parallel rank 1 (pid {proc.pid}) was killed by "
                                     "SIGKILL; the engine has stopped.")
        assert time.monotonic() - start < 10
        with pytest.raises(TensorParallelError):  # every later step fails at once, too
            driver.step([(seq, [4])])
    finally:
        runner.close()
    assert not _alive(proc.pid)


def test_rank0_failing_mid_step_stops_its_workers(dummy_model, monkeypatch):
    runner = _runner(dummy_model)
    try:
        driver = PagedDriver(runner, num_blocks=32)
        (proc,) = runner.workers.procs.values()

        def broken(*args):  # the workers have the step and wait in its first collective
            raise RuntimeError("out of memory")

        monkeypatch.setattr(runner.model, "forward", broken)
        with pytest.raises(TensorParallelError, match=r"^Tensor-parallel rank 0 failed: "
                           r"RuntimeError: out of memory; the engine has stopped\.$"):
            driver.step([(PagedSeq(), [1, 5, 9])])
        assert _wait_gone(proc.pid), "the worker was left waiting"
    finally:
        runner.close()


def test_a_worker_that_dies_while_starting(dummy_model):
    outcome: dict[str, BaseException] = {}

    def build():
        try:
            _runner(dummy_model).close()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=build)
    thread.start()
    deadline = time.monotonic() + 60
    while not (workers := _children(os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert workers, "no worker process started"
    os.kill(workers[0], signal.SIGKILL)
    thread.join(timeout=30)
    assert not thread.is_alive(), "the engine hangs after its worker died"
    error = outcome.get("error")
    assert isinstance(error, TensorParallelError)
    assert str(error).startswith("Tensor-parallel rank 1 (pid ") and "SIGKILL" in str(error)
    assert not _children(os.getpid())


def test_workers_end_when_the_driver_dies(dummy_model):
    script = (
        "import sys, time\n"
        "from lmforge.messages import PytorchEngineConfig\n"
        "from lmforge.model.loader import load_model_info\n"
        "from lmforge_torch_triton.runner import TorchModelRunner\n"
        f"info = load_model_info({str(dummy_model)!r}, load_format='dummy')\n"
        "r = TorchModelRunner(info, PytorchEngineConfig(device='cpu', tp=2))\n"
        "print(*[p.pid for p in r.workers.procs.values()], flush=True)\n"
        "time.sleep(600)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in driver.stdout.readline().split()]
        assert len(pids) == 1 and _alive(pids[0])
    finally:
        driver.kill()
        driver.wait()
    assert _wait_gone(pids[0]), "the worker outlived its driver"


def test_a_worker_reports_why_it_failed(dummy_model):
    from lmforge_torch_triton.parallel.rendezvous import host_store, publish_job
    from lmforge_torch_triton.parallel.workers import REPORT_FD_ENV

    store = host_store(2)
    # A job this CPU-only machine cannot run: the worker says why, in the driver's words.
    publish_job(store, load_model_info(dummy_model, load_format="dummy"),
                PytorchEngineConfig(device="cuda", tp=2))
    read_fd, write_fd = os.pipe()
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(store.port), RANK="1",
               WORLD_SIZE="2", LOCAL_RANK="1", **{REPORT_FD_ENV: str(write_fd)})
    proc = subprocess.Popen([sys.executable, "-m", WORKER], env=env, pass_fds=(write_fd,))
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as report:
        message = report.read().decode()
    assert proc.wait(timeout=60) == 1
    assert message == "Invalid value for device: 'cuda' was asked for but no CUDA GPU is visible."


def test_exit_causes():
    from lmforge_torch_triton.parallel.monitor import exit_cause

    assert exit_cause(1, "ran out of GPU memory.\n") == "failed: ran out of GPU memory"
    assert exit_cause(-9, "") == "was killed by SIGKILL"
    assert exit_cause(3, "") == "exited with status 3"
