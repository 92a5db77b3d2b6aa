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
