"""The worker process: ``serve`` (role all) starts it, tells it of changes through a pipe and restarts it when
it dies; the worker dies with its parent, even when the parent is SIGKILLed."""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from bot.config import Config
from bot.errors import ExecutionError
from bot.hub import KICK, AuditTail, Inbox, decode_change, encode_change
from bot.runtime import Runtime, build_runtime, start_up

log = logging.getLogger(__name__)

GO = b"go\n"  # first line to a new worker: the web process is configured, recover and run
READY = b"ready\n"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning(
                "prctl(PR_SET_PDEATHSIG) failed (errno %d): the pipe alone watches the parent", ctypes.get_errno()
            )
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)


class WorkerSupervisor:
    """Runs ``serve --role worker`` as a child process, keeps it running, and forwards changes to it."""

    def __init__(self, config_path: str, *, restart_delay_s: float = 0.5, max_delay_s: float = 10.0) -> None:
        self.argv = [sys.executable, "-m", "bot", "serve", "--role", "worker", "--config", str(Path(config_path))]
        self.restart_delay_s = restart_delay_s
        self.max_delay_s = max_delay_s
        # glibc gives every thread that allocates an arena of its own; the worker runs up to 64 target threads
        # and 128 probe threads, so two arenas keep its memory near its idle size (an operator's value wins).
        self.env = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._pipe: IO[bytes] | None = None
        self._write = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failed: str | None = None
        self._released = False
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> WorkerSupervisor:
        """Start the worker process: it loads the bot while this process builds its own, then waits for ``release``."""
        self._thread.start()
        return self

    def release(self, ready_timeout_s: float = 120.0) -> None:
        """Let the worker recover unfinished runs and run; wait until it has (or raise ExecutionError)."""
        with self._write:
            self._released = True
            self._send(GO)
        if not self._ready.wait(ready_timeout_s) or self._failed:
            self.stop()
            raise ExecutionError(self._failed or f"the worker process was not ready within {ready_timeout_s:.0f} s")

    def forward(self, run_id: str, what: str = "") -> None:
        """Hub subscriber: tell the worker process about a change (dropped while it restarts: it catches up)."""
        with self._write:
            if self._released:
                self._send(encode_change(run_id, what))

    def _send(self, line: bytes) -> None:
        """Write one line to the worker (under ``_write``); a dead worker's pipe is dropped."""
        if self._pipe is None:
            return
        try:
            self._pipe.write(line)
            self._pipe.flush()
        except (BrokenPipeError, ValueError, OSError):  # it died; the restarted worker syncs the active run
            self._pipe = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        ready_r, ready_w = os.pipe()
        argv = [*self.argv, "--parent-pid", str(os.getpid()), "--ready-fd", str(ready_w)]
        try:
            # The spawning thread lives as long as the child: PR_SET_PDEATHSIG fires when it ends.
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, pass_fds=(ready_w,), close_fds=True, env=self.env)
        finally:
            os.close(ready_w)
        self.starts += 1
        threading.Thread(target=self._await_ready, args=(proc, ready_r), name="worker-ready", daemon=True).start()
        return proc

    def _await_ready(self, proc: subprocess.Popen[bytes], ready_r: int) -> None:
        try:
            data = b""
            while not data.endswith(b"\n"):
                readable, _, _ = select.select([ready_r], [], [], 1.0)
                if readable:
                    chunk = os.read(ready_r, 64)
                    if not chunk:
                        break
                    data += chunk
                elif proc.poll() is not None or self._stop.is_set():
                    break
        finally:
            os.close(ready_r)
        if data == READY:
            log.info("worker process %d is ready", proc.pid)
            self._ready.set()

    def _watch(self) -> None:
        delay = self.restart_delay_s
        while not self._stop.is_set():
            proc = self._spawn()
            with self._write:
                self._proc, self._pipe = proc, proc.stdin
                if self._released:  # a restart: the web process is long configured
                    self._send(GO)
            started = time.monotonic()
            code = proc.wait()
            with self._write:
                self._pipe = None
            if self._stop.is_set():
                return
            if not self._ready.is_set():  # it never got going (configuration, database): serve fails too
                self._failed = f"the worker process exited with {code} before it was ready"
                self._ready.set()
                return
            if time.monotonic() - started > 60:
                delay = self.restart_delay_s  # it ran a good while: this is not a crash loop
            log.warning("worker process %d exited with %s; starting another in %.1f s", proc.pid, code, delay)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.max_delay_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the worker (it finishes what it holds), SIGKILL it after ``timeout_s``; no restart."""
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()


def _deliver_to(runtime: Runtime) -> Inbox:
    """Changes from another process go on this process's hub (the thread, reminders, report, then the worker)."""
    hub, worker = runtime.hub, runtime.engine.worker
    assert hub is not None and worker is not None

    def deliver(run_id: str, whats: set[str]) -> None:
        changes = sorted(whats - {KICK})
        for what in changes:
            hub.publish(run_id, what)  # the hub's last subscriber kicks the worker
        if not changes:
            worker.kick(run_id)  # only a wake-up: nothing to show

    return Inbox(deliver)


def _read_pipe(inbox: Inbox, pipe: IO[bytes]) -> None:
    for line in iter(pipe.readline, b""):
        change = decode_change(line)
        if change is not None:
            inbox.put(*change)
    log.error("the serve process that started this worker is gone: stopping at once")
    os._exit(1)  # as if killed with it: the next serve's worker recovers what was in flight


def run_worker(config: Config, *, parent_pid: int | None = None, ready_fd: int | None = None) -> None:
    """The worker role: recover, then execute, show and remind until SIGTERM (or the parent's death)."""
    supervised = parent_pid is not None
    if parent_pid is not None:
        die_with_parent(parent_pid)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us in order
        if sys.stdin.buffer.readline() != GO:  # the parent did not start (its configuration, say): nothing to do
            log.info("worker process %d: the serve process did not start; stopping", os.getpid())
            return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    runtime = build_runtime(config, role="worker")
    tail: AuditTail | None = None
    try:
        start_up(runtime)
        inbox = _deliver_to(runtime)
        if supervised:
            threading.Thread(target=_read_pipe, args=(inbox, sys.stdin.buffer), name="change-pipe", daemon=True).start()
        else:
            tail = AuditTail(runtime.store, inbox).start()  # changes of web processes deployed apart
        if ready_fd is not None:
            os.write(ready_fd, READY)
            os.close(ready_fd)
        log.info("worker process %d running (%s)", os.getpid(), "supervised" if supervised else "tailing the audit log")
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            log.info("worker stopping (interrupted)")
        inbox.close()
    finally:
        if tail is not None:
            tail.close()
        runtime.close()
