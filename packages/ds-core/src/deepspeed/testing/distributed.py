"""Run a test body in N real processes on gloo and collect each rank's return value.

    from deepspeed.testing.distributed import run_distributed

    def _body(scale):                       # module level: it is pickled by reference
        import deepspeed.comm as dist
        t = torch.ones(2) * dist.get_rank() * scale
        dist.all_reduce(t)
        return t.tolist()

    def test_all_reduce():
        assert run_distributed(_body, world_size=2, args=(3,)) == [[3.0, 3.0]] * 2

Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (a free port) and
``deepspeed.init_distributed`` has been called before the body runs. The call fails (never hangs)
when a rank raises (every failing rank's traceback is in the message), exits early or is killed,
or when the whole run exceeds ``timeout`` seconds (``DS_TEST_TIMEOUT`` overrides the default
120); on a timeout the stacks of the ranks still running are included.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import re
import signal
import socket
import sys
import tempfile
import time
import traceback

_DEFAULT_TIMEOUT = 120.0
#: After the first failure, how long the other ranks get to report their own error.
_GRACE_S = 3.0
# Errors a rank gets because a peer died or left, not because of its own code.
_PEER_LOST = re.compile(r"Connection (closed|reset) by peer|Broken pipe|was stopped after another rank failed"
                        r"|remote worker (crashing|hanging)")


class DistributedTestError(AssertionError):
    """A distributed run failed; the message has one section per failing rank.

    ``failures`` maps rank -> text (traceback or reason); ``results`` holds the ranks that did
    return (rank -> value)."""

    def __init__(self, message: str, failures: dict[int, str], results: dict[int, object]) -> None:
        super().__init__(message)
        self.failures = failures
        self.results = results


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _context():
    # Note: forkserver gives spawn's safety (children come from a clean, single-threaded server,
    # never from the pytest process) at a fraction of its cost: the server imports torch once and
    # each rank is a fork of it, instead of every rank re-importing torch (~1 s each on 2 cores).
    method = os.environ.get("DS_TEST_START_METHOD")
    if method is None:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        # pytest is preloaded only when the caller already runs under it (it is what imports the
        # test modules the ranks unpickle); the preload applies when the server first starts.
        extra = [m for m in ("pytest",) if m in sys.modules]
        ctx.set_forkserver_preload(["torch", "torch.distributed", "deepspeed.comm", *extra])
    return ctx


def _module_hint(fn) -> tuple[str, str | None] | None:
    """(module name, file) of ``fn``'s module, so a rank can load it by path when the name is not
    importable (pytest's ``--import-mode=importlib`` names modules after their path)."""
    name = getattr(fn, "__module__", None)
    module = sys.modules.get(name) if name else None
    return (name, getattr(module, "__file__", None)) if module is not None else None


def _load_module(hint) -> None:
    import importlib
    import importlib.util

    name, path = hint
    if name in sys.modules or name == "__main__":
        return
    try:
        importlib.import_module(name)
    except ImportError:
        if path is None:
            raise
        import types

        # As pytest does in that mode: stand-in parent packages, so pickle can import the name.
        parts = name.split(".")
        for i in range(1, len(parts)):
            sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def _worker(rank: int, payload: bytes, hint, env: dict, sys_path: list, conn, stack_file: str | None) -> None:
    """Body of one rank: set the environment, init, run, send ("ok", value) or ("error", text)."""
    succeeded = False
    try:
        # The forkserver was started earlier: take the caller's current environment and path.
        os.environ.clear()
        os.environ.update(env)
        sys.path[:] = sys_path
        if stack_file is not None and hasattr(signal, "SIGUSR1"):
            import faulthandler

            faulthandler.register(signal.SIGUSR1, file=open(stack_file, "w"), all_threads=True)
        import torch

        # Note: ranks share the machine's cores; one intra-op thread each avoids oversubscription.
        torch.set_num_threads(int(env.get("DS_TEST_NUM_THREADS", "1")))
        if hint is not None:
            _load_module(hint)
        fn, args, kwargs, backend, init = pickle.loads(payload)
        if init:
            import deepspeed.comm as dist

            dist.init_distributed(dist_backend=backend, verbose=False)
        fn = getattr(fn, "_ds_distributed_body", fn)
        result = fn(*args, **kwargs)
        try:
            data = pickle.dumps(("ok", _portable(result)))
        except Exception:
            data = pickle.dumps(("error", "the return value could not be sent back (it must be picklable):\n"
                                 + traceback.format_exc()))
        conn.send_bytes(data)
        succeeded = True
    except BaseException:
        try:
            conn.send_bytes(pickle.dumps(("error", traceback.format_exc())))
        except Exception:
            pass
    finally:
        conn.close()
        _teardown(succeeded)


def _portable(obj):
    """``obj`` with every tensor replaced by a compact, detached CPU copy.

    Note: results travel as plain pickle bytes. Pickled through the connection, a tensor would
    go through torch's multiprocessing reductions, which share its storage with the parent and
    need this process alive until the parent reads it (a rank that returned a view of a ZeRO flat
    buffer then "exited before returning a result"); a copy also pickles only its own elements.
    """
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True).clone()
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple
        return type(obj)(*(_portable(v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_portable(v) for v in obj)
    if isinstance(obj, dict):
        import collections

        out = {k: _portable(v) for k, v in obj.items()}
        return collections.OrderedDict(out) if isinstance(obj, collections.OrderedDict) else out
    return obj


def _teardown(succeeded: bool) -> None:
    """Leave the process group. After a success, first wait for the other ranks: gloo has no
    barrier at the end of init, so a rank with a trivial body could otherwise exit while a peer
    is still connecting, and that peer would fail with "Connection closed by peer". After a
    failure, exit at once so the peers' pending collectives fail fast instead of hanging."""
    try:
        import torch.distributed as tdist

        if tdist.is_available() and tdist.is_initialized():
            if succeeded:
                tdist.barrier()
            tdist.destroy_process_group()
    except Exception:
        pass


def _terminate(procs, grace: float = 0.0) -> None:
    """Stop the ranks: let them exit on their own for ``grace`` seconds, then SIGTERM, SIGKILL."""
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 2.0
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)


def _stacks(procs, stack_files, pending) -> dict[int, str]:
    """Python stacks of the ranks still running (faulthandler on SIGUSR1)."""
    out = {}
    for rank in pending:
        if procs[rank].is_alive() and stack_files[rank] is not None:
            os.kill(procs[rank].pid, signal.SIGUSR1)
    time.sleep(0.5)
    for rank in pending:
        path = stack_files[rank]
        if path and os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            if text:
                out[rank] = text
    return out


def run_distributed(fn, world_size: int = 2, args=(), kwargs=None, timeout: float | None = None,
                    backend: str = "gloo", init_distributed: bool = True, env: dict | None = None) -> list:
    """Run ``fn(*args, **kwargs)`` on ``world_size`` ranks; return the results in rank order.

    ``fn`` must be picklable by reference (a module-level function). ``env`` adds environment
    variables for every rank. Raises :class:`DistributedTestError` (an AssertionError) naming
    every failed rank, and ``ValueError`` for a bad ``world_size`` or an unpicklable ``fn``.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"run_distributed: world_size={world_size!r} must be a positive int")
    if timeout is None:
        timeout = float(os.environ.get("DS_TEST_TIMEOUT", _DEFAULT_TIMEOUT))
    try:
        payload = pickle.dumps((fn, tuple(args), dict(kwargs or {}), backend, init_distributed))
    except Exception as exc:
        raise ValueError(
            f"run_distributed: {fn!r} or its arguments cannot be pickled ({exc}); define the test body "
            f"at module level and pass picklable arguments"
        ) from exc
    for attempt in range(3):
        try:
            return _run_once(payload, _module_hint(fn), fn, world_size, timeout, env)
        except DistributedTestError as err:
            # Note: the free port can be taken between our probe and rank 0's bind; retry then.
            if attempt == 2 or not any("address already in use" in t.lower() for t in err.failures.values()):
                raise
    raise AssertionError("unreachable")


def _run_once(payload: bytes, hint, fn, world_size: int, timeout: float, extra_env: dict | None) -> list:
    ctx = _context()
    port = _free_port()
    tmpdir = tempfile.mkdtemp(prefix="ds_dist_")
    base_env = dict(os.environ)
    base_env.update(extra_env or {})
    procs, conns, stack_files = [], [], []
    for rank in range(world_size):
        env = dict(base_env, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        recv_conn, send_conn = ctx.Pipe(duplex=False)
        stack_file = os.path.join(tmpdir, f"stack_rank{rank}.txt") if hasattr(signal, "SIGUSR1") else None
        p = ctx.Process(target=_worker, args=(rank, payload, hint, env, list(sys.path), send_conn, stack_file),
                        name=f"ds-rank{rank}", daemon=True)
        p.start()
        send_conn.close()
        procs.append(p)
        conns.append(recv_conn)
        stack_files.append(stack_file)

    results: dict[int, object] = {}
    failures: dict[int, str] = {}
    order: list[int] = []  # ranks in the order they failed: the first is usually the cause
    pending = set(range(world_size))
    deadline = time.monotonic() + timeout
    grace_deadline = None
    timed_out = False
    try:
        while pending:
            now = time.monotonic()
            limit = deadline if grace_deadline is None else min(deadline, grace_deadline)
            if now >= limit:
                timed_out = grace_deadline is None or deadline <= grace_deadline
                break
            waitables = {conns[r]: r for r in pending}
            waitables.update({procs[r].sentinel: r for r in pending})
            ready = multiprocessing.connection.wait(list(waitables), timeout=limit - now)
            for obj in ready:
                rank = waitables[obj]
                if rank not in pending:
                    continue
                if obj is conns[rank] or conns[rank].poll():
                    try:
                        data = conns[rank].recv_bytes()
                    except (EOFError, OSError):
                        status, value = "exit", None
                    else:
                        try:
                            status, value = pickle.loads(data)
                        except Exception:
                            status, value = "error", ("the return value could not be read back:\n"
                                                      + traceback.format_exc())
                else:
                    status, value = "exit", None
                if status == "exit":
                    procs[rank].join(1.0)
                    code = procs[rank].exitcode
                    why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    value = f"rank {rank} exited ({why}) before returning a result"
                    status = "error"
                pending.discard(rank)
                if status == "ok":
                    results[rank] = value
                else:
                    failures[rank] = value
                    order.append(rank)
                    if grace_deadline is None:
                        grace_deadline = time.monotonic() + _GRACE_S
        stacks = _stacks(procs, stack_files, pending) if pending else {}
    finally:
        _terminate(procs, grace=5.0 if not failures and not pending else 0.0)
        for c in conns:
            c.close()
    for rank in sorted(pending):
        if timed_out:
            reason = f"rank {rank} did not finish within the {timeout:g} s timeout (DS_TEST_TIMEOUT to change it)"
        else:
            reason = f"rank {rank} was stopped after another rank failed"
        if rank in stacks:
            reason += f"; its stack when stopped:\n{stacks[rank]}"
        failures[rank] = reason
    if failures:
        name = getattr(fn, "__qualname__", repr(fn))
        # Causes first (a rank's own error, exit or signal), then peers that merely lost it.
        ranked = order + sorted(set(failures) - set(order))
        bad = [r for r in ranked if not _PEER_LOST.search(failures[r])] + [
            r for r in ranked if _PEER_LOST.search(failures[r])]
        sections = "\n".join(f"----- rank {r} -----\n{failures[r].rstrip()}" for r in bad)
        raise DistributedTestError(
            f"{name} failed on rank(s) {', '.join(map(str, bad))} of world_size={world_size} (causes first, "
            f"then ranks that lost a peer):\n{sections}",
            failures, results,
        )
    return [results[r] for r in range(world_size)]


def distributed_test(world_size: int = 2, timeout: float | None = None, backend: str = "gloo"):
    """Decorator: the module-level test function runs on ``world_size`` ranks when pytest calls
    it; pytest fixtures it asks for (``tmp_path``...) are passed to every rank."""

    def decorate(body):
        @functools.wraps(body)
        def test(*args, **kwargs):
            run_distributed(test, world_size=world_size, args=args, kwargs=kwargs, timeout=timeout, backend=backend)

        test._ds_distributed_body = body
        return test

    return decorate


__all__ = ["DistributedTestError", "distributed_test", "run_distributed"]
