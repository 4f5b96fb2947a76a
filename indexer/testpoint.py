"""Named points in the indexer where tests can crash it on purpose (off unless the variable is set).

    LIFT_SEARCH_TEST_POINTS="after-db-commit=kill"      SIGKILL this process at that point
    LIFT_SEARCH_TEST_POINTS="fit-start=kill+0.5"        ... 0.5 s after reaching it (mid-training)
    LIFT_SEARCH_TEST_POINTS="vectors-write=kill@2"      ... the second time it is reached
    LIFT_SEARCH_TEST_POINTS="vectors-write=enospc"      raise OSError(ENOSPC) there (a full disk)
    LIFT_SEARCH_TEST_POINTS="decoder"                   obey decode.py's file-name markers
                                                        (__segfault__, __hang__) in the workers
    LIFT_SEARCH_TEST_TRACE=FILE                         append each point's name to FILE as reached

Several entries are separated by commas. Points: see the `testpoint("...")` calls in pipeline.py,
reconcile.py, store.py and segments.py. Used by tests/test_kill_resume.py and tests/test_reliability.py only.
"""
from __future__ import annotations

import errno
import os
import signal
import threading

ENV, TRACE_ENV = "LIFT_SEARCH_TEST_POINTS", "LIFT_SEARCH_TEST_TRACE"
_seen: dict[str, int] = {}


def _rules() -> dict[str, str]:
    spec = os.environ.get(ENV, "")
    return dict((part.split("=", 1) + [""])[:2] for part in spec.split(",") if part.strip())


def enabled(name: str) -> bool:
    return name in _rules()


def testpoint(name: str) -> None:
    """Reached `name`: trace it, and crash as the environment asks (a no-op when it asks nothing)."""
    if TRACE_ENV not in os.environ and ENV not in os.environ:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if trace := os.environ.get(TRACE_ENV):
        with open(trace, "a") as f:
            f.write(name + "\n")
    action = _rules().get(name)
    if not action:
        return
    action, _, nth = action.partition("@")
    if nth and _seen[name] != int(nth):
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if action.startswith("kill"):
        delay = float(action[len("kill+"):]) if action.startswith("kill+") else 0.0
        if delay <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
        timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL))
        timer.daemon = True
        timer.start()
