"""The trust boundary, tried as an attacker with push access would (issue 9;
this covers the compiler flags so far)."""
from .test_controller import MANIFEST, first_deploy, hello, text


def test_compiler_flags_cannot_run_or_read_anything_else(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    marker = tmp_path / "pwned"
    attacks = {
        f'["-wrapper", "/bin/sh,-c,touch {marker}"]': "'-wrapper' is not allowed",
        f'["-B{tmp_path}"]': "is not allowed: it changes which programs",
        '["-include/etc/shadow"]': "'/etc/shadow' is outside the app directory",
        '["-fplugin=/tmp/evil.so"]': "is not allowed: it loads a plugin",
        '["@/etc/passwd"]': "is not allowed: it reads more flags from a file",
    }
    for flags, said in attacks.items():
        work.commit(f"flags {flags}", {"deploy.yaml": MANIFEST.replace("source: hello.c",
                                                                        f"source: hello.c\n        cflags: {flags}"),
                                       "hello.c": hello("v2")})
        out = work.push()
        assert said in out and "deploy FAILED (ManifestInvalid)" in out, out
        assert "root:" not in out
    assert not marker.exists(), "no program ran on the controller's host"
    assert text(server) == "v1"


def test_the_compiler_sees_the_app_and_nothing_of_the_host(up, tmp_path):
    """An include of a host file or of the controller's token fails as a
    missing file inside the build sandbox: no line of it reaches any output."""
    server, work = first_deploy(up, tmp_path)
    token = server.token()
    for include in ("/etc/passwd", "../../token", "../../hotplate.db"):
        work.commit(f"include {include}", {"hello.c": f'#include "{include}"\n' + hello("v2")})
        out = work.push()
        assert "deploy FAILED (BuildFailed)" in out and "No such file or directory" in out, out
        assert "root:" not in out and token not in out
        row = server.deploys()[0]
        assert "root:" not in row["log"] and token not in row["log"]
    assert text(server) == "v1"
