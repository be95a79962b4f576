"""Engines that schedule one plain per-item function over many items: a local process pool, or Ray tasks.

The unit of work (e.g. `edgeml.video.datasets._extract_job`, one video -> one shard) is a function of its inputs that
writes its own output atomically and returns a small dict; an engine only decides where and when it runs, so every
engine writes the same bytes. `run_jobs(fn, jobs, engine=...)` is the one way in.

- "local": `parallel_map`, spawned worker processes of this host that die with it (the default).
- "ray": one Ray task per small batch of items on a Ray cluster (`ray start --head` / `ray start --address=...`) or on
  a local instance started for the call; at most `workers` tasks in flight, tasks lost to a dead worker or node
  retried by Ray (`max_retries`). Ray is the optional extra `edgeml[ray]`.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from edgeml.errors import EdgeMLError, InputError, MissingDependencyError
from edgeml.progress import Progress

ENGINES = ("local", "ray")
RAY_MAX_RETRIES = 3  # attempts after the first when a task's worker process (or its node) dies
RAY_MAX_BATCH = 8  # items per Ray task at most: amortises the per-task overhead, bounds the work a retry repeats


@contextlib.contextmanager
def progress_bar(total: int, what: str, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A progress bar (edgeml.progress); yields advance(n=1). Silent when disabled or empty."""
    with Progress(enabled and total > 0) as bar:
        task = bar.add(what, total)
        yield lambda n=1: bar.advance(task, n)


def parallel_map(fn: Callable[[Any], Any], jobs: list, workers: int, what: str, progress: bool = True, *,
                 chunksize: int = 1) -> list:
    """[fn(j) for j in jobs] in `workers` spawned processes (in order, with a progress bar); one worker runs here.
    A worker that dies (killed, out of memory, or a calling script that starts work at import time) is an
    EdgeMLError, not a bare BrokenProcessPool."""
    results = []
    with progress_bar(len(jobs), what, progress) as advance:
        if workers <= 1 or len(jobs) < 2:
            for j in jobs:
                results.append(fn(j))
                advance()
            return results
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
                for r in pool.map(fn, jobs, chunksize=chunksize):
                    results.append(r)
                    advance()
        except BrokenProcessPool:
            raise EdgeMLError(f"a {what} worker process exited abruptly after {len(results)} of {len(jobs)} jobs",
                              fix="if you call edgeml from a script, guard its top level with "
                                  "`if __name__ == '__main__':` (workers are spawned and re-import it); otherwise "
                                  "check memory, or use workers=1. Finished work is kept: rerun to resume") from None
    return results


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: the kernel kills this process (SIGKILL) when its parent dies, so a killed build or synth
    leaves no orphan workers running (Linux prctl PR_SET_PDEATHSIG; elsewhere the pool's own shutdown only)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)


# --------------------------------------------------------------------------------------------------- Ray


def import_ray(purpose: str) -> Any:
    """The `ray` module, or a MissingDependencyError naming the `edgeml[ray]` extra."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", extra="ray", purpose=purpose) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None, workers: int | None, purpose: str) -> Iterator[Any]:
    """Yields `ray`, connected. Inside an initialised Ray (a script's or a test's `ray.init`) it is used as it is;
    else `address` ("auto" or HOST:PORT) joins a running cluster, and None starts a local instance of `workers`
    CPUs (all of this machine's when None). What this call connected or started it also disconnects or stops."""
    ray = import_ray(purpose)
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address is None:
            ray.init(num_cpus=workers or os.cpu_count() or 1, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise InputError(f"cannot connect to the Ray cluster at {address!r} ({e})",
                         fix="start one with `ray start --head` (and `ray start --address=HEAD:6379` on other "
                             "nodes), or leave --address out to start a local instance") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _run_batch(fn: Callable[[Any], Any], batch: list) -> list:
    """A Ray task: fn over a few items, in order (fn writes its own outputs, atomically)."""
    return [fn(j) for j in batch]


def ray_map(fn: Callable[[Any], Any], jobs: list, workers: int | None, what: str, progress: bool = True, *,
            address: str | None = None, max_retries: int = RAY_MAX_RETRIES) -> list:
    """[fn(j) for j in jobs] as Ray tasks of up to RAY_MAX_BATCH items, at most `workers` in flight (None: every CPU
    of the cluster), results in job order, a progress bar on this (the driver's) side. `fn` must be importable by the
    workers (a module-level function of an installed package). A task whose worker dies is retried `max_retries`
    times; past that, an EdgeMLError (finished outputs are kept: rerun to resume). An exception `fn` raises is
    raised here (as a subclass of its own type), not retried."""
    if not jobs:
        return []
    with ray_session(address, workers, f"--engine ray ({what})") as ray:
        from ray.exceptions import RayError, RayTaskError

        slots = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        size = max(1, min(RAY_MAX_BATCH, math.ceil(len(jobs) / (8 * slots))))  # >= 8 tasks per slot: balanced
        batches = [list(range(i, min(i + size, len(jobs)))) for i in range(0, len(jobs), size)]
        task = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(_run_batch)
        task = task.options(name=f"edgeml:{getattr(fn, '__name__', 'job')}")
        fn_ref = ray.put(fn)
        results: list[Any] = [None] * len(jobs)
        pending: dict[Any, list[int]] = {}
        todo = iter(batches)
        with progress_bar(len(jobs), what, progress) as advance:
            try:
                while True:
                    while len(pending) < slots and (b := next(todo, None)) is not None:
                        pending[task.remote(fn_ref, [jobs[i] for i in b])] = b
                    if not pending:
                        break
                    (ready,), _ = ray.wait(list(pending), num_returns=1)
                    b = pending.pop(ready)
                    for i, r in zip(b, ray.get(ready), strict=True):
                        results[i] = r
                    advance(len(b))
            except RayError as e:
                for ref in pending:
                    ray.cancel(ref, force=True)
                if isinstance(e, RayTaskError):  # fn itself raised (not a lost worker): its error, as locally
                    raise e.as_instanceof_cause() from None
                done = sum(r is not None for r in results)
                first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                raise EdgeMLError(f"a {what} Ray task failed after {max_retries} retries, {done} of {len(jobs)} jobs "
                                  f"done ({type(e).__name__}: {first})",
                                  fix="check the Ray workers' memory and logs (/tmp/ray/session_latest/logs). "
                                      "Finished work is kept: rerun to resume") from None
    return results


def run_jobs(fn: Callable[[Any], Any], jobs: list, *, engine: str = "local", workers: int | None = None,
             address: str | None = None, what: str = "jobs", progress: bool = True) -> list:
    """[fn(j) for j in jobs] on `engine` ("local": `workers` processes of this host, default 2; "ray": Ray tasks,
    see `ray_map`). `address` is Ray's (auto | HOST:PORT); results come back in job order."""
    check_engine(engine, address)
    if engine == "ray":
        return ray_map(fn, jobs, workers, what, progress, address=address)
    return parallel_map(fn, jobs, 2 if workers is None else workers, what, progress)


def check_engine(engine: str, address: str | None = None) -> None:
    """Before any work: InputError for an unknown engine or an address without Ray; MissingDependencyError (naming
    the extra) for --engine ray without Ray installed."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}", fix=f"use one of {', '.join(ENGINES)}")
    if address is not None and engine != "ray":
        raise InputError("--address names a Ray cluster; it needs --engine ray")
    if engine == "ray":
        import_ray("--engine ray")


__all__ = ["ENGINES", "check_engine", "die_with_parent", "import_ray", "parallel_map", "progress_bar", "ray_map",
           "ray_session", "run_jobs"]
