"""Short fuzzing runs of everything that parses input (issue 9): the
manifest validator, webhook verification and the git-HTTP path check
(atheris), and the C runtime's request and JSON code (libFuzzer, under ASan
and UBSan). Each run is bounded by a count of inputs, not by time; longer
runs: scripts/fuzz."""
import os
import subprocess
import sys

import pytest

from hotplate.server.paths import INCLUDE_DIR, RUNTIME_DIR
from hotplate.server.libhotplate import LIBS, c_sources

from .conftest import ROOT

FUZZ = ROOT / "tests" / "fuzz"


@pytest.mark.parametrize("target", ["manifest", "webhook", "git_path"])
def test_python_parsers_survive_fuzzing(target, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tests.fuzz.targets", target, "-runs=20000", "-seed=1",
                             f"-artifact_prefix={tmp_path}/"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TMPDIR": str(tmp_path)})  # (its app directory: libFuzzer's exit skips cleanup)
    assert result.returncode == 0 and "Done 20000 runs" in result.stderr, result.stderr[-3000:]


def test_c_request_parsing_survives_fuzzing(tmp_path):
    exe = tmp_path / "request_fuzz"
    subprocess.run(["clang", "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
                    f"-I{INCLUDE_DIR}", f"-I{RUNTIME_DIR}", str(FUZZ / "request_fuzz.c"),
                    *map(str, c_sources()), *LIBS, "-o", str(exe)], check=True)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed in ("request-seed", "form-seed"):
        (corpus / seed).write_bytes((FUZZ / "corpus" / seed).read_bytes())
    result = subprocess.run([str(exe), "-runs=300000", "-seed=1", f"-artifact_prefix={tmp_path}/", str(corpus)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "Done 300000 runs" in result.stderr, result.stderr[-3000:]
