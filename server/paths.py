"""Where the server's own files live: the SDK header and the C runtime sources."""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
INCLUDE_DIR = PACKAGE_DIR / "include"
HEADER = INCLUDE_DIR / "hotplate.h"
RUNTIME_DIR = PACKAGE_DIR / "runtime"
HOST_API = RUNTIME_DIR / "host_api.h"
