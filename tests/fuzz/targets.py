"""atheris fuzz targets for the controller's input parsers (issue 9):
``python -m tests.fuzz.targets TARGET [libFuzzer flags]``.

Each target states what must hold for any input; anything else (an
unexpected exception, a broken property) is a finding. tests/test_fuzz.py
runs each briefly; scripts/fuzz runs them for as long as you like.
"""
from __future__ import annotations

import posixpath
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from werkzeug.datastructures import Headers

    from hotplate.controller.errors import ManifestError
    from hotplate.controller.githttp import REPO, repo_path
    from hotplate.controller.plan import load_manifest
    from hotplate.controller.webhooks import WebhookError, sign, verify

APP = Path(tempfile.mkdtemp(prefix="hotplate-fuzz-"))
(APP / "hello.c").write_text("int x;\n")
SECRET = "fuzz-secret"
SIGNATURE_HEADERS = ("X-Hub-Signature-256", "X-Gitea-Signature", "X-Gitlab-Token", "X-Hotplate-Signature")


def manifest(data: bytes) -> None:
    """Any text: a Manifest, or ManifestError naming deploy.yaml:LINE."""
    try:
        load_manifest(APP, data.decode("utf-8", "replace"))
    except ManifestError as e:
        assert all(p.startswith("deploy.yaml") for p in e.problems), e.problems


def webhook(data: bytes) -> None:
    """Any headers and body: an Event, or WebhookError 400/401/413; a body
    signed with the right secret is never refused as unsigned."""
    fdp = atheris.FuzzedDataProvider(data)
    headers = Headers()
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        name = SIGNATURE_HEADERS[fdp.ConsumeIntInRange(0, 3)] if fdp.ConsumeBool() else fdp.ConsumeUnicode(12)
        value = fdp.ConsumeUnicodeNoSurrogates(80)
        if not any(c in name + value for c in "\r\n"):  # an HTTP server never delivers those
            headers.add(name, value)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    if fdp.ConsumeBool() if fdp.remaining_bytes() else False:
        headers["X-Hotplate-Signature"] = sign(SECRET, body)
    try:
        verify(headers, body, SECRET)
    except WebhookError as e:
        assert e.status in (400, 401, 413), e.status


def git_path(data: bytes) -> None:
    """Any path: None, or one that stays inside the hosted repository."""
    path = data.decode("utf-8", "replace")
    inside = repo_path(path)
    if inside is not None:
        assert posixpath.normpath(inside).startswith(f"/{REPO}/"), inside
        assert ".." not in inside.split("/"), inside


TARGETS = {"manifest": manifest, "webhook": webhook, "git_path": git_path}


def main() -> None:
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
