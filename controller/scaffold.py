"""``hotplate init``: a new app repository with a manifest and one module."""
from __future__ import annotations

from pathlib import Path

import git

MANIFEST = """\
# Routes map to exported C functions. Reference: the hotplate README.
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


def scaffold(path: Path) -> Path:
    """Create ``path`` with deploy.yaml, modules/hello.c and a first commit."""
    path = path.resolve()
    if (path / "deploy.yaml").exists():
        raise FileExistsError(f"{path / 'deploy.yaml'} exists already")
    (path / "modules").mkdir(parents=True, exist_ok=True)
    (path / "deploy.yaml").write_text(MANIFEST.format(name=path.name))
    (path / "modules" / "hello.c").write_text(MODULE)
    (path / ".gitignore").write_text(".hotplate/\n.hotplate-dev/\n")
    repo = git.Repo.init(path, initial_branch="main")
    repo.index.add(["deploy.yaml", "modules/hello.c", ".gitignore"])
    repo.index.commit("hotplate init")
    return path
