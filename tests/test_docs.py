"""The manual: the MkDocs site builds with --strict (a broken link, a
missing anchor or a page left out of the nav fails), its C API and CLI
references are generated from the header and the parser and miss nothing,
and the README stays a front page whose links all lead somewhere."""
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

HEADER = ROOT / "server" / "include" / "hotplate.h"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120, env={"NO_MKDOCS_2_WARNING": "1",
                                                                          "PATH": "/usr/bin:/bin"})
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def test_the_c_api_reference_has_every_function_the_header_declares(site):
    page = re.sub(r"<[^>]+>", "", (site / "reference" / "c-api" / "index.html").read_text())  # code is highlighted
    declared = set(re.findall(r"^static inline [^(]*?\b(hp_\w+)\(", HEADER.read_text(), re.M))
    assert len(declared) > 80, declared
    missing = sorted(name for name in declared if f"{name}(" not in page)
    assert not missing, f"in hotplate.h but not in the reference: {missing}"
    assert "struct hp_api {" not in page, "the internal function table is left out"
    assert '"/users/&lt;int:id&gt;/&lt;name&gt;"' in page, "the header's prose shows as written, not as HTML"


def test_the_cli_reference_has_every_command(site):
    from hotplate.controller.cli import parser

    page = (site / "reference" / "cli" / "index.html").read_text()
    sub = next(a for a in parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = [name for name in sub.choices if f"hotplate {name}</h2>" not in page and f"hotplate {name}<a" not in page]
    assert not missing, missing


def test_the_readme_is_a_front_page_whose_links_resolve(site):
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    links = re.findall(r"\]\(((?!https?://)[^)#]+)", readme)
    assert links and all((ROOT / link).exists() for link in links), [x for x in links if not (ROOT / x).exists()]
    assert "scripts/demo" in (site / "index.html").read_text(), "the site's home page is the README"
