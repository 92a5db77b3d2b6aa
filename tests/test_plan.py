"""Manifest validation: every problem found before anything builds, with file:line and key."""
import pytest

from hotplate.controller.errors import ManifestError
from hotplate.controller.plan import load_manifest

from .conftest import ROOT, write_app

HELLO = "#include <hotplate.h>\nHP_MODULE;\n"


def problems(tmp_path, manifest: str, sources=None) -> list[str]:
    app = write_app(tmp_path / "app", manifest, sources if sources is not None else {"a.c": HELLO})
    with pytest.raises(ManifestError) as e:
        load_manifest(app)
    return e.value.problems


def test_demo_manifest_is_valid():
    m = load_manifest(ROOT)
    assert [mod.name for mod in m.modules] == ["hello", "api", "counter", "notes", "session", "tasks", "chat"]
    chat = m.module("chat").websockets[0]
    assert (chat.path, chat.handlers, chat.max_message) == ("/chat/<room>", ("chat_open", "chat_message", "chat_close"), 4096)
    notes = m.module("notes")
    assert notes.libs == ("sqlite3",) and notes.health == "/notes/health"
    assert m.module("api").routes[1].timeout_ms == 2000
    assert m.module("hello").routes[0].timeout_ms == 30000


def test_websocket_routes_are_checked(tmp_path):
    found = problems(tmp_path, """\
        modules:
          a:
            source: a.c
            routes: [{path: /live, handler: h}]
            websockets:
              - {path: /live, on_open: o}
              - {path: /ws, on_message: hp_m, subprotocols: [ok.v1, "bad one"], max_message: 2GiB, on_clos: c}
        """)
    assert found == [
        "deploy.yaml:6: modules.a.websockets[0].on_message: required: the name of an exported C function "
        "(see hotplate.h, WebSocket handlers)",
        "deploy.yaml:7: modules.a.websockets[1].on_clos: unknown key; did you mean `on_close`?",
        "deploy.yaml:7: modules.a.websockets[1].on_message: names starting with hp_ are reserved for the SDK; "
        "rename the function",
        "deploy.yaml:7: modules.a.websockets[1].subprotocols: 'bad one' is not a subprotocol token (letters, digits, . - _)",
        "deploy.yaml:7: modules.a.websockets[1].max_message: '2GiB' is not a size; write bytes (65536) or '64KiB', "
        "'1MiB' (from 1B to 64MiB)",
        "deploy.yaml:6: modules.a: duplicate route GET /live: deploy.yaml:4 (module a) already serves GET /live; "
        "remove one or change its path",
    ]


def test_a_module_may_have_only_websockets(tmp_path):
    app = write_app(tmp_path / "app", """\
        modules:
          a:
            source: a.c
            websockets: [{path: "/ws/<int:n>", on_message: m, max_message: 64KiB, timeout: 500ms}]
        """, {"a.c": HELLO})
    (sock,) = load_manifest(app).module("a").websockets
    assert (sock.on_open, sock.on_close, sock.max_message, sock.timeout_ms) == (None, None, 65536, 500)


def test_unknown_keys_are_named_with_a_suggestion(tmp_path):
    found = problems(tmp_path, """\
        modules:
          a:
            source: a.c
            rotues: []
            routes:
              - {path: /, handler: h, method: GET}
        """)
    assert "deploy.yaml:4: modules.a.rotues: unknown key; did you mean `routes`?" in found
    assert any(p.startswith("deploy.yaml:6: modules.a.routes[0].method: unknown key; did you mean `methods`") for p in found)


def test_missing_source_and_escape_from_app_dir(tmp_path):
    found = problems(tmp_path, """\
        modules:
          a:
            source: missing.c
            routes: [{path: /, handler: h}]
          b:
            source: ../outside.c
            routes: [{path: /b, handler: h}]
        """)
    assert "deploy.yaml:3: modules.a.source: 'missing.c' does not exist; check the path (relative to deploy.yaml)" in found
    assert any("deploy.yaml:6: modules.b.source: '../outside.c' is outside the app directory" in p for p in found)


def test_bad_patterns_methods_symbols_and_timeouts(tmp_path):
    found = "\n".join(problems(tmp_path, """\
        timeout: forever
        modules:
          a:
            source: a.c
            routes:
              - {path: "/u/<int:id", handler: h}
              - {path: nope, handler: h2}
              - {path: /x, handler: "1bad"}
              - {path: /y, handler: hp_init}
              - {path: /z, handler: z, methods: [GET, FETCH]}
              - {path: /t, handler: t, timeout: -1}
        """))
    assert "deploy.yaml:1: timeout: 'forever' is not a timeout" in found
    assert "deploy.yaml:6: modules.a.routes[0].path: bad pattern '/u/<int:id'" in found
    assert "deploy.yaml:7: modules.a.routes[1].path: 'nope' must start with /" in found
    assert "deploy.yaml:8: modules.a.routes[2].handler: required: the name of an exported C function" in found
    assert "deploy.yaml:9: modules.a.routes[3].handler: names starting with hp_ are reserved" in found
    assert "deploy.yaml:10: modules.a.routes[4].methods: unknown method 'FETCH'" in found
    assert "deploy.yaml:11: modules.a.routes[5].timeout: -1 is not a timeout" in found


def test_duplicate_conflicting_and_reserved_routes(tmp_path):
    found = problems(tmp_path, """\
        modules:
          a:
            source: a.c
            routes:
              - {path: "/users/<int:id>", handler: h}
              - {path: /_hotplate/health, handler: h}
          b:
            source: a.c
            routes:
              - {path: "/users/<int:uid>", handler: h}
              - {path: "/users/<int:id>", handler: h, methods: [POST]}
              - {path: "/users/<int:id>", handler: h, methods: [GET]}
        """)
    assert "deploy.yaml:6: modules.a.routes[1].path: paths under /_hotplate/ are reserved for the server; choose another path" in found
    assert ("deploy.yaml:10: modules.b: conflicting route GET /users/<int:uid>: deploy.yaml:5 (module a) "
            "already serves GET /users/<int:id>; remove one or change its path") in found
    assert any(p.startswith("deploy.yaml:12: modules.b: duplicate route GET /users/<int:id>") for p in found)
    assert not any("POST" in p for p in found)


def test_libs_written_as_flags_and_bad_health(tmp_path):
    found = problems(tmp_path, """\
        modules:
          a:
            source: a.c
            libs: [-lsqlite3]
            health: /missing
            config: {nested: {x: 1}}
            routes: [{path: /, handler: h}]
        """)
    assert "deploy.yaml:4: modules.a.libs: '-lsqlite3' is not a library name; write `sqlite3`, not `-lsqlite3`" in found
    assert "deploy.yaml:5: modules.a.health: '/missing' is not one of this module's GET routes; add it to `routes:`" in found
    assert any(p.startswith("deploy.yaml:6: modules.a.config: must be a mapping") for p in found)


def test_not_yaml_and_not_a_mapping(tmp_path):
    assert problems(tmp_path, "modules: [\n")[0].startswith("deploy.yaml:2: not valid YAML")
    assert problems(tmp_path, "- a\n") == ["deploy.yaml:1: : the manifest must be a mapping with a `modules:` key"]
    assert problems(tmp_path, "app: x\n") == [
        "deploy.yaml:1: modules: required: a mapping of module name to {source, routes}"]


def test_duplicate_yaml_keys_are_reported(tmp_path):
    found = problems(tmp_path, """\
        modules:
          a:
            source: a.c
            source: a.c
            routes: [{path: /, handler: h}]
        """)
    assert found == ["deploy.yaml:4: modules.a.source: key appears twice; keep one"]


def test_missing_keys_point_at_their_parent(tmp_path):
    found = problems(tmp_path, """\
        modules:
          a:
            source: a.c
        """)
    assert found == ["deploy.yaml:2: modules.a.routes: required: a list of {path, handler, methods} (or `websockets:`)"]


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="deploy.yaml: not found"):
        load_manifest(tmp_path)


def test_cflags_are_an_allowlist(tmp_path):
    """A push may tune how its C compiles, never run or read anything else."""
    (tmp_path / "a.c").write_text("")
    (tmp_path / "cfg.h").write_text("")
    ok = ["-O3", "-DNDEBUG", "-DLEVEL=2", "-UX", "-Wall", "-Wno-unused", "-Werror=format", "-fno-strict-aliasing",
          "-std=c11", "-g", "-march=native", "-pedantic", "-pthread", "-include", "cfg.h", "-imacros=cfg.h"]
    manifest = load_manifest(tmp_path, MANIFEST_WITH_CFLAGS.format(flags=ok))
    assert manifest.modules[0].cflags == tuple(ok)
    refused = {"-wrapper": "changes which programs", "-B/tmp/evil": "changes which programs",
               "-specs=/tmp/x": "changes which programs", "-fplugin=/tmp/p.so": "loads a plugin",
               "@/etc/flags": "reads more flags from a file", "-o/tmp/out": "changes which programs",
               "-Wl,-rpath,/tmp": "passes options on to the linker", "-Xlinker": "passes options on to the linker",
               "-I/etc": "names a directory", "-fprofile-use=/etc/shadow": "reads or writes files",
               "--help": "not one of the flags"}
    for flag, why in refused.items():
        with pytest.raises(ManifestError) as e:
            load_manifest(tmp_path, MANIFEST_WITH_CFLAGS.format(flags=[flag]))
        problem = e.value.problems[0]
        assert problem.startswith(f"deploy.yaml:5: modules.a.cflags: {flag!r} is not allowed: ") and why in problem, \
            e.value.problems
    for flags in (["-include/etc/shadow"], ["-include", "../outside.h"], ["-imacros", "/etc/passwd"], ["-include"]):
        with pytest.raises(ManifestError) as e:
            load_manifest(tmp_path, MANIFEST_WITH_CFLAGS.format(flags=flags))
        assert "modules.a.cflags" in e.value.problems[0] and ("outside the app" in e.value.problems[0] or
                                                              "needs a file" in e.value.problems[0]), e.value.problems


MANIFEST_WITH_CFLAGS = """\
modules:
  a:
    source: a.c
    routes: [{{path: /, handler: h}}]
    cflags: {flags}
"""


@pytest.mark.parametrize("text", ["\n=", "a: !!python/object:os.system x\n"])
def test_yaml_a_safe_loader_cannot_read_is_a_manifest_error(tmp_path, text):
    """Found by fuzzing: these compose but do not construct, and were an
    internal error instead of a ManifestInvalid deploy."""
    found = problems(tmp_path, text)
    assert len(found) == 1 and found[0].startswith("deploy.yaml:") and "not valid YAML" in found[0], found


def test_the_manifest_accepts_exactly_the_patterns_the_request_core_serves(tmp_path):
    """plan.py's check and C's route compiler (serve.c) judge the same patterns alike."""
    from hotplate.controller.plan import unserved
    from hotplate.server import libhotplate
    ffi, lib = libhotplate.load()
    patterns = ["/", "/a", "/a/<x>", "/a/<int:id>", "/a/<string:s>/b", "/files/<path:rest>", "/<a>/<int:b>/<path:c>",
                "/a/<uuid:id>", "/a/<float:f>", "/a/<string(length=2):s>", "/a/x<id>", "/a/<id>.json",
                "/a/<path:p>/b", "/" + "/".join("s" * 33), "/" + "/".join("s" * 32)]
    verdicts = {p: (unserved(p) is None, lib.hp_rt_serve_route(b"GET", p.encode(), b"m", ffi.NULL, ffi.NULL, b"h",
                                                                1000, 0, ffi.NULL) == 0) for p in patterns}
    assert all(ours == c for ours, c in verdicts.values()), verdicts
    assert not verdicts["/a/<uuid:id>"][0] and verdicts["/files/<path:rest>"][0]
    refused = "\n".join(problems(tmp_path, """\
        modules:
          a:
            source: a.c
            routes: [{path: "/a/<uuid:id>", handler: h}]
        """))
    assert "bad pattern '/a/<uuid:id>': '<uuid:id>': a parameter is a whole segment" in refused, refused
