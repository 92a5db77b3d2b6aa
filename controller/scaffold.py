"""``hotplate init``: a new app repository with a manifest and one module."""
from __future__ import annotations

from pathlib import Path

import git

from .errors import HotplateError

MANIFEST = """\
# Routes map to exported C functions. Reference: docs/reference/manifest.md in hotplate.
app: {name}
modules:
  hello:
    source: modules/hello.c
    routes:
      - {{path: /, handler: hello}}
    websockets:
      - {{path: /echo, on_message: echo}}
"""

MODULE = """\
#include <hotplate.h>

HP_MODULE;

HP_EXPORT int hello(hp_request *req, hp_response *res)
{
    const char *name = hp_req_query(req, "name");
    hp_res_printf(res, "Hello, %s!\\n", name ? name : "world");
    return HP_OK;
}

/* ws://.../echo: each message comes back as it was sent. */
HP_EXPORT int echo(hp_ws *ws, const void *data, size_t len, int type)
{
    return hp_ws_send(ws, data, len, type);
}
"""


FILES = {"deploy.yaml": MANIFEST, "modules/hello.c": MODULE, ".gitignore": ".hotplate/\n.hotplate-dev/\n"}


def scaffold(path: Path, branch: str = "main", force: bool = False) -> Path:
    """Create ``path`` with deploy.yaml, modules/hello.c and a first commit
    on ``branch`` (the one `hotplate up` tracks), in a new repository or the
    one already there. Never overwrites a file unless ``force``.

    :raises HotplateError: when a file exists, or git refuses.
    """
    path = path.resolve()
    existing = [name for name in FILES if (path / name).exists()]
    if existing and not force:
        raise HotplateError(f"{path / existing[0]} exists already; pass --force to overwrite "
                            f"{', '.join(existing)}, or choose an empty directory")
    try:
        (path / "modules").mkdir(parents=True, exist_ok=True)
        for name, text in FILES.items():
            (path / name).write_text(text.format(name=path.name) if name == "deploy.yaml" else text)
        repo = git.Repo(path) if (path / ".git").exists() else git.Repo.init(path, initial_branch=branch)
        repo.index.add(list(FILES))
        repo.index.commit("hotplate init")
    except (OSError, git.GitError) as e:
        raise HotplateError(f"cannot create the app in {path}: {e}") from None
    return path
