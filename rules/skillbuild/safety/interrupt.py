"""SIGTERM ends a doit run the way Ctrl-C does, so doit saves its state (it does on KeyboardInterrupt only).

Two traps, both seen with `doit -n 2`:
- a process-directed signal may land on a helper thread (multiprocessing's queue feeder) while the main
  thread sits in a blocking read; the read is not interrupted and the Python handler never runs: doit hangs.
- an exception raised inside a lock, condition or queue operation can leave a waiter stuck: doit hangs at exit.
So SIGTERM is blocked in every thread and taken by one watcher thread (sigwait), which signals the main
thread itself (pthread_kill, which does interrupt its read) until the main thread is outside such code.
doit's worker processes simply die on SIGTERM: the parent holds the state and saves it.

Once doit has saved its state, the KeyboardInterrupt reaches the top: instead of a traceback and a death by
signal, one line says what happened and the process exits 143 (128 + SIGTERM) or 130 (128 + SIGINT, Ctrl-C),
after the exit handlers (the run's audit record) have run.
"""
from __future__ import annotations

import atexit
import multiprocessing.util
import os
import signal
import sys
import threading
import time

NUDGE = signal.SIGUSR2  # watcher -> main thread; nothing else in a doit run uses it
RETRY_SECONDS = 0.02
_STDLIB = {os.path.dirname(threading.__file__), os.path.dirname(multiprocessing.util.__file__)}
_UNSAFE_FILES = ("threading.py", "queue.py", "queues.py", "synchronize.py", "util.py")
_state = {"installed": False, "interrupted": False}
EXIT_SIGTERM, EXIT_SIGINT = 128 + signal.SIGTERM, 128 + signal.SIGINT


def exit_status() -> int:
    """The status an interrupted run ends with: 143 after SIGTERM, 130 after Ctrl-C."""
    return EXIT_SIGTERM if _state["interrupted"] else EXIT_SIGINT


def install() -> None:
    """Call once from the main thread, before doit starts threads or worker processes."""
    if _state["installed"] or threading.current_thread() is not threading.main_thread():
        return
    _state["installed"] = True
    sys.excepthook = _quiet_interrupt(sys.excepthook)
    signal.signal(NUDGE, _on_nudge)
    signal.signal(signal.SIGTERM, _on_nudge)  # the fallback if a thread started earlier receives it
    if not hasattr(signal, "pthread_sigmask"):
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by every later thread
    threading.Thread(target=_watch, args=(threading.main_thread().ident,), name="sigterm-watcher",
                     daemon=True).start()
    os.register_at_fork(after_in_child=_in_worker)


def _quiet_interrupt(previous):
    def hook(kind, value, tb) -> None:
        if not issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, tb)
        atexit._run_exitfuncs()  # the run's own exit handlers, before the process ends here
        os._exit(farewell())

    return hook


def farewell() -> int:
    """Say what ended the run and return its exit status (the `skillbuild` command returns it from main)."""
    status = exit_status()
    what = "terminated (SIGTERM)" if status == EXIT_SIGTERM else "interrupted (Ctrl-C)"
    sys.stdout.flush()
    print(f"skillbuild: {what}; finished tasks are saved, run the same command again to continue "
          f"(exit status {status})", file=sys.stderr, flush=True)
    return status


def _watch(main_ident: int) -> None:
    signal.sigwait({signal.SIGTERM})
    while not _state["interrupted"]:
        signal.pthread_kill(main_ident, NUDGE)
        time.sleep(RETRY_SECONDS)


def _on_nudge(signum, frame) -> None:
    if _state["interrupted"] or not safe_to_interrupt(frame):
        return  # the watcher nudges again shortly
    _state["interrupted"] = True
    raise KeyboardInterrupt("terminated (SIGTERM)")


def safe_to_interrupt(frame) -> bool:
    """False inside the standard library's threading, queue and import-lock code; a blocking
    `multiprocessing` queue read (doit waiting for a worker's result) is fine to interrupt."""
    while frame is not None:
        path, func = frame.f_code.co_filename, frame.f_code.co_name
        if "importlib._bootstrap" in path:
            return False
        if os.path.dirname(path) in _STDLIB and path.endswith(_UNSAFE_FILES):
            if not (path.endswith("queues.py") and func == "get"):
                return False
        frame = frame.f_back
    return True


def _in_worker() -> None:
    # A forked doit worker: no watcher thread here, so take SIGTERM's default (exit) back.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
