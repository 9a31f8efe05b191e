"""Keep what native protocol libraries print out of an interactive program's terminal.

The IEC 61850 binding prints a debug line on the C level (file descriptor 2) for every control a simulated IED
handles. In a program that also hosts the simulators (``dscada demo``), ``divert_native_stderr`` sends descriptor 2
to a log file while Python's own ``sys.stderr`` (and the logging handlers on it) keep writing to the terminal through
a duplicate of the original descriptor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def divert_native_stderr(log_path: Path) -> Iterator[Path]:
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                         errors="backslashreplace")
    old_stderr = sys.stderr
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is old_stderr]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as native:
        os.dup2(native.fileno(), 2)
        sys.stderr = terminal
        for h in handlers:
            h.setStream(terminal)
        try:
            yield log_path
        finally:
            terminal.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sys.stderr = old_stderr
            for h in handlers:
                h.setStream(old_stderr)
            terminal.close()
