"""The C SDK's own unit tests, compiled with the runtime under ASan/UBSan and run."""
import subprocess

from hotplate.server.paths import INCLUDE_DIR, RUNTIME_DIR
from hotplate.server.libhotplate import c_sources
from hotplate.server.libhotplate import LIBS

from .conftest import ROOT


def test_sdk_unit_tests_pass_under_sanitizers(tmp_path):
    exe = tmp_path / "test_sdk"
    sources = [str(p) for p in c_sources()]
    subprocess.run(["cc", "-std=gnu11", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                    "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE_DIR}", f"-I{RUNTIME_DIR}", "-o", str(exe),
                    str(ROOT / "tests/c/test_sdk.c"), *sources, *LIBS], check=True)
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert " 0 failed" in result.stdout


def test_header_compiles_as_strict_c_and_cpp(tmp_path):
    """Module authors include hotplate.h with strict flags, from C or C++."""
    src = tmp_path / "m.c"
    src.write_text('#include <hotplate.h>\nHP_MODULE;\n'
                   'HP_EXPORT int h(hp_request *q, hp_response *r) { return hp_res_printf(r, "%s", hp_req_path(q)); }\n')
    for compiler, std in (("cc", "-std=c11"), ("g++", "-std=c++17")):
        lang = ["-x", "c++"] if compiler == "g++" else []
        subprocess.run([compiler, *lang, std, "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-Wno-unused-parameter",
                        "-fsyntax-only", f"-I{INCLUDE_DIR}", str(src)], check=True)


def test_the_runtime_exports_only_its_host_entry_points():
    """Internal hp_* names stay inside libhotplate (server/runtime/exports.map)."""
    from hotplate.server.libhotplate import build_runtime
    out = subprocess.run(["nm", "-D", "--defined-only", str(build_runtime())], capture_output=True, text=True,
                         check=True).stdout
    names = [line.split()[-1] for line in out.splitlines()]
    assert "hp_rt_serve_conn" in names and "rt_dispatch" not in names and all(n.startswith("hp_rt_") for n in names), names
