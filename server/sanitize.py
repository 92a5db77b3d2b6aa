"""Sanitizer builds for module authors (``hotplate dev --sanitize``, issue 9).

Modules are compiled with AddressSanitizer and UndefinedBehaviorSanitizer;
the server runs with the ASan runtime preloaded (Python is not built with it,
and an instrumented module can only be loaded after it). A sanitizer error
aborts the handler's call: the crash guard turns that into a 500 whose body,
in dev only, carries the report with file:line, which also goes to the dev
console. Dev only: ASan's shadow memory rules out the address-space limit,
and its symbolizer may run programs, which the system-call filter forbids.
"""
from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

#: Added to each module's compiler flags (and so to its cache key). Memory
#: errors are ASan's: UBSan's object-size check would report them first,
#: through a runtime that ignores UBSAN_OPTIONS once ASan is loaded. Other
#: undefined behaviour is reported on the console and the call goes on.
FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize=object-size", "-fno-omit-frame-pointer", "-g")


@functools.lru_cache(maxsize=1)
def runtime_library() -> str:
    """The ASan runtime of the compiler that builds modules."""
    return subprocess.run(["cc", "-print-file-name=libasan.so"], capture_output=True, text=True,
                          check=True).stdout.strip()


def environment(reports: Path) -> dict[str, str]:
    """What a process that loads sanitized modules needs: the runtime first,
    errors that abort (so the crash guard sees them), each process's
    reports in ``reports/sanitizer.<pid>``, and ``HOTPLATE_SANITIZE`` naming
    that directory (ServerConfig.sanitize)."""
    options = f"abort_on_error=1:halt_on_error=1:log_path={Path(reports) / 'sanitizer'}"
    return {"HOTPLATE_SANITIZE": str(reports), "LD_PRELOAD": runtime_library(),
            "ASAN_OPTIONS": f"{options}:detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}


def take_report(reports: Path, pid: int | None = None) -> str | None:
    """This process's latest sanitizer report, removed once read."""
    path = Path(reports) / f"sanitizer.{pid or os.getpid()}"
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return text
