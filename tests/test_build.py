"""The builder and releases: content-addressed cache, diagnostics, smoke check."""
import json
import os

import pytest

from hotplate.controller.build import Builder
from hotplate.controller.errors import BuildError, SmokeCheckError
from hotplate.controller.deploy import build_release
from hotplate.controller.state import State
from hotplate.controller.plan import load_manifest

from .conftest import write_app

MODULE = """\
#include <hotplate.h>
#include "shared.h"
HP_MODULE;
HP_EXPORT int h(hp_request *req, hp_response *res) {{ return hp_res_printf(res, "{name} %d\\n", SHARED); }}
"""
PLAIN = """\
#include <hotplate.h>
HP_MODULE;
HP_EXPORT int h(hp_request *req, hp_response *res) { return hp_res_printf(res, "plain\\n"); }
"""


def three_module_app(root):
    return write_app(root, """\
        modules:
          one: {source: one.c, include: [inc], routes: [{path: /one, handler: h}]}
          two: {source: two.c, include: [inc], routes: [{path: /two, handler: h}]}
          plain: {source: plain.c, routes: [{path: /plain, handler: h}]}
        """, {"one.c": MODULE.format(name="one"), "two.c": MODULE.format(name="two"),
              "plain.c": PLAIN, "inc/shared.h": "#define SHARED 1\n"})


def build(app, cache):
    return {m.name: m for m in Builder(app, cache).build(load_manifest(app)).modules}


def test_unchanged_modules_never_recompile(tmp_path):
    app = three_module_app(tmp_path / "app")
    first = build(app, tmp_path / "cache")
    assert not any(m.cached for m in first.values())
    second = build(app, tmp_path / "cache")
    assert all(m.cached for m in second.values())
    assert {n: m.key for n, m in first.items()} == {n: m.key for n, m in second.items()}


def test_header_change_rebuilds_exactly_its_dependants(tmp_path):
    app = three_module_app(tmp_path / "app")
    first = build(app, tmp_path / "cache")
    (app / "inc/shared.h").write_text("#define SHARED 2\n")
    second = build(app, tmp_path / "cache")
    assert {n for n, m in second.items() if not m.cached} == {"one", "two"}
    assert second["plain"].key == first["plain"].key
    assert second["one"].key != first["one"].key


def test_flags_libs_and_source_are_in_the_key(tmp_path):
    app = three_module_app(tmp_path / "app")
    first = build(app, tmp_path / "cache")
    text = (app / "deploy.yaml").read_text().replace("plain: {source: plain.c,", "plain: {source: plain.c, cflags: [-DX=1],")
    (app / "deploy.yaml").write_text(text)
    second = build(app, tmp_path / "cache")
    assert {n for n, m in second.items() if not m.cached} == {"plain"}
    (app / "one.c").write_text(MODULE.format(name="uno"))
    third = build(app, tmp_path / "cache")
    assert {n for n, m in third.items() if not m.cached} == {"one"}
    assert len({first["plain"].key, second["plain"].key}) == 2


def test_going_back_to_an_earlier_version_hits_the_cache(tmp_path):
    app = three_module_app(tmp_path / "app")
    first = build(app, tmp_path / "cache")
    (app / "inc/shared.h").write_text("#define SHARED 2\n")
    build(app, tmp_path / "cache")
    (app / "inc/shared.h").write_text("#define SHARED 1\n")
    again = build(app, tmp_path / "cache")
    assert all(m.cached for m in again.values())
    assert {n: m.key for n, m in again.items()} == {n: m.key for n, m in first.items()}


def test_two_checkouts_of_one_tree_share_the_cache(tmp_path):
    a = three_module_app(tmp_path / "a")
    b = three_module_app(tmp_path / "b")
    build(a, tmp_path / "cache")
    assert all(m.cached for m in build(b, tmp_path / "cache").values())


def test_compile_error_is_reported_verbatim_and_makes_no_release(tmp_path):
    app = three_module_app(tmp_path / "app")
    (app / "two.c").write_text("#include <hotplate.h>\nHP_MODULE;\nint broken( {\n")
    state = State(tmp_path / "state")
    with pytest.raises(BuildError) as e:
        build_release(app, state)
    failed = [r for r in e.value.results if not r.ok]
    assert [r.name for r in failed] == ["two"]
    assert "two.c:3:" in failed[0].diagnostics and "error:" in failed[0].diagnostics
    assert "two (two.c)" in str(e.value)
    assert not state.releases.exists() or not any(state.releases.iterdir())


def test_missing_library_fails_the_build_with_a_hint(tmp_path):
    app = write_app(tmp_path / "app", """\
        modules:
          db: {source: db.c, routes: [{path: /, handler: h}]}
        """, {"db.c": """\
            #include <hotplate.h>
            #include <sqlite3.h>
            HP_MODULE;
            HP_EXPORT int h(hp_request *req, hp_response *res) { return hp_res_printf(res, "%s", sqlite3_libversion()); }
            """})
    with pytest.raises(BuildError) as e:
        build_release(app, State(tmp_path / "state"))
    diagnostics = e.value.results[0].diagnostics
    assert "undefined reference to `sqlite3_libversion'" in diagnostics
    assert "name the library that defines it under the module's `libs:`" in diagnostics
    # Naming it in the manifest is the fix.
    (app / "deploy.yaml").write_text("modules:\n  db: {source: db.c, libs: [sqlite3], routes: [{path: /, handler: h}]}\n")
    assert build_release(app, State(tmp_path / "state")).release.path.is_dir()


def test_pkg_config_packages_link(tmp_path):
    app = write_app(tmp_path / "app", """\
        modules:
          z: {source: z.c, pkg-config: [zlib], routes: [{path: /, handler: h}]}
        """, {"z.c": """\
            #include <hotplate.h>
            #include <zlib.h>
            HP_MODULE;
            HP_EXPORT int h(hp_request *req, hp_response *res) { return hp_res_printf(res, "%s", zlibVersion()); }
            """})
    assert build_release(app, State(tmp_path / "state")).build.modules[0].ok
    (app / "deploy.yaml").write_text("modules:\n  z: {source: z.c, pkg-config: [nosuchlib], routes: [{path: /, handler: h}]}\n")
    with pytest.raises(BuildError) as e:
        build_release(app, State(tmp_path / "state"))
    assert "pkg-config could not find nosuchlib" in e.value.results[0].diagnostics


def test_forgotten_hp_module_gets_a_hint(tmp_path):
    app = write_app(tmp_path / "app", "modules:\n  a: {source: a.c, routes: [{path: /, handler: h}]}\n", {"a.c": """\
        #include <hotplate.h>
        HP_EXPORT int h(hp_request *req, hp_response *res) { return hp_res_printf(res, "x"); }
        """})
    with pytest.raises(BuildError) as e:
        build_release(app, State(tmp_path / "state"))
    assert "add `HP_MODULE;`" in e.value.results[0].diagnostics
    assert "libs:" not in e.value.results[0].diagnostics, "hp__api is no library to name"


def smoke_failure(tmp_path, source: str, handler: str = "h") -> str:
    app = write_app(tmp_path / "app", f"modules:\n  bad: {{source: bad.c, routes: [{{path: /, handler: {handler}}}]}}\n",
                    {"bad.c": source})
    state = State(tmp_path / "state")
    with pytest.raises(SmokeCheckError) as e:
        build_release(app, state)
    assert [p.name for p in state.releases.iterdir()] == [], "a failed release must leave nothing behind"
    return str(e.value)


def test_missing_handler_symbol_fails_the_release(tmp_path):
    msg = smoke_failure(tmp_path, PLAIN, handler="nosuch")
    assert "module bad (bad.c): handler(s) deploy.yaml:2: nosuch not exported by bad.c" in msg


def test_a_misspelt_handler_names_its_line_and_what_was_meant(tmp_path):
    source = PLAIN.replace("int h(", "int hello_world(")
    msg = smoke_failure(tmp_path, source, handler="helo_world")
    assert "deploy.yaml:2: helo_world (did you mean hello_world?) not exported by bad.c" in msg, msg


def test_unexported_handler_fails_the_release(tmp_path):
    msg = smoke_failure(tmp_path, "#include <hotplate.h>\nHP_MODULE;\nint h(hp_request *q, hp_response *r) { return 0; }\n")
    assert "handler(s) deploy.yaml:2: h not exported" in msg and "HP_EXPORT" in msg


def test_abi_mismatch_fails_the_release(tmp_path):
    msg = smoke_failure(tmp_path, "#include <stdint.h>\n"
                        "__attribute__((visibility(\"default\"))) const uint32_t hp_module_abi = 99;\n"
                        "__attribute__((visibility(\"default\"))) void hp_module_bind(const void *a) {}\n"
                        "__attribute__((visibility(\"default\"))) int h(void *q, void *r) { return 0; }\n")
    assert "ABI mismatch: built against hotplate ABI 99" in msg


def test_crash_in_init_fails_the_release(tmp_path):
    msg = smoke_failure(tmp_path, PLAIN + "HP_EXPORT int hp_init(hp_module *m) { return *(volatile int *)0; }\n")
    assert "hp_init crashed with Segmentation fault" in msg


def test_init_error_fails_the_release(tmp_path):
    msg = smoke_failure(tmp_path, PLAIN + "HP_EXPORT int hp_init(hp_module *m) { hp_module_log(m, HP_LOG_ERROR, \"no\"); return HP_ERROR; }\n")
    assert "hp_init returned -1 (HP_ERROR)" in msg


def test_release_is_content_addressed_with_unique_object_names(tmp_path):
    app = three_module_app(tmp_path / "app")
    state = State(tmp_path / "state")
    first = build_release(app, state).release
    again = build_release(app, state).release
    assert again.id == first.id and again.reused
    (app / "inc/shared.h").write_text("#define SHARED 3\n")
    second = build_release(app, state).release
    assert second.id != first.id
    objects = lambda r: {m["name"]: m["object"] for m in json.loads((r.path / "release.json").read_text())["modules"]}
    assert objects(first)["plain"] == objects(second)["plain"]
    assert objects(first)["one"] != objects(second)["one"]
    record = json.loads((second.path / "build.json").read_text())
    assert {m["name"]: m["cached"] for m in record["modules"]} == {"one": False, "two": False, "plain": True}
    # Objects are never rewritten in place: a new content gets a new file (and inode).
    ino = lambda r, n: os.stat(r.path / objects(r)[n]).st_ino
    assert ino(first, "one") != ino(second, "one")


def test_a_compile_that_never_ends_is_stopped(tmp_path, monkeypatch):
    """gcc waiting on an include that never comes (a FIFO nobody writes):
    the build fails with a reason, and no compiler process is left behind.
    (An endless one, /dev/zero, meets the memory bound first: test_fences.py.)"""
    import subprocess

    from hotplate.controller import build
    monkeypatch.setattr(build, "COMPILE_TIMEOUT_S", 2)
    app = write_app(tmp_path / "app", "modules:\n  z: {source: z.c, routes: [{path: /, handler: h}]}\n",
                    {"z.c": '#include "never.h"\n'})
    os.mkfifo(app / "never.h")
    with pytest.raises(BuildError) as e:
        build_release(app, State(tmp_path / "state"))
    assert "the compiler did not finish within 2s" in e.value.results[0].diagnostics
    left = subprocess.run(["pgrep", "-f", f"cc1.*{tmp_path.name}"], capture_output=True, text=True).stdout
    assert left == "", "the compiler's children are killed too"


def test_without_a_sandbox_builds_are_refused_unless_allowed(tmp_path, monkeypatch):
    from hotplate.controller import sandbox
    from hotplate.controller.errors import RetryableError

    monkeypatch.setattr(sandbox, "unavailable", lambda: "bubblewrap is not installed (apt-get install bubblewrap)")
    app = write_app(tmp_path / "app", "modules:\n  h: {source: h.c, routes: [{path: /, handler: h}]}\n",
                    {"h.c": HELLO_SOURCE})
    with pytest.raises(RetryableError) as e:
        build_release(app, State(tmp_path / "state"))
    assert e.value.reason == "NoSandbox" and "HOTPLATE_UNSANDBOXED_BUILDS=1" in str(e.value)
    monkeypatch.setenv("HOTPLATE_UNSANDBOXED_BUILDS", "1")
    assert build_release(app, State(tmp_path / "state")).build.modules[0].ok


HELLO_SOURCE = """\
#include <hotplate.h>
HP_MODULE;
HP_EXPORT int h(hp_request *req, hp_response *res) { return hp_res_printf(res, "hi"); }
"""


def test_each_modules_lines_stay_together_whichever_compile_ends_first(tmp_path):
    """Modules compile in parallel; what is said of each (its line, then its
    compiler's) comes out whole, never interleaved with another's (issue 21)."""
    import time
    app = three_module_app(tmp_path / "app")
    lines = []

    def report(m):
        for part in ("start", "middle", "end"):
            lines.append((m.name, part))
            time.sleep(0.02)  # (room for another thread's lines, were they not held back)

    Builder(app, tmp_path / "cache", jobs=3).build(load_manifest(app), on_result=report)
    names = [name for name, _ in lines]
    assert len(lines) == 9 and all(names[i] == names[i - i % 3] for i in range(9)), lines


def test_dev_serves_tccs_object_and_shows_gccs_diagnostics(tmp_path):
    """hotplate dev's builds (quick): tcc builds what is served, gcc reads
    the source beside it for the errors and warnings; C that tcc cannot
    build (a 128-bit integer) is built by gcc; a release's never by tcc."""
    warned = PLAIN + "HP_EXPORT int w(void) { int unused; return 0; }\n"
    wide = PLAIN + "HP_EXPORT int x(void) { __int128 big = 1; return (int)(big << 1); }\n"
    broken = PLAIN + "int nope = ;\n"
    app = write_app(tmp_path / "app", """\
        modules:
          warned: {source: warned.c, routes: [{path: /w, handler: h}]}
          wide: {source: wide.c, routes: [{path: /x, handler: h}]}
        """, {"warned.c": warned, "wide.c": wide})
    quick = {m.name: m for m in Builder(app, tmp_path / "cache", quick=True).build(load_manifest(app)).modules}
    assert "warned.c:4" in quick["warned"].diagnostics and "unused variable" in quick["warned"].diagnostics
    made_by_gcc = {name: b"GCC: (" in m.object_path.read_bytes() for name, m in quick.items()}
    assert made_by_gcc == {"warned": False, "wide": True}, made_by_gcc
    release = build(app, tmp_path / "cache")
    assert all(b"GCC: (" in m.object_path.read_bytes() for m in release.values()), "releases are gcc's"
    assert release["warned"].key != quick["warned"].key
    (app / "warned.c").write_text(broken)
    with pytest.raises(BuildError) as e:
        Builder(app, tmp_path / "cache", quick=True).build(load_manifest(app))
    failed = next(m for m in e.value.results if m.name == "warned")
    assert "warned.c:4" in failed.diagnostics and "error:" in failed.diagnostics
