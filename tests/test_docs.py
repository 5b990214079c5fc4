"""The documentation's code: every fenced block of ``docs/**/*.md`` and ``README.md``.

- ```` ```python ```` blocks compile; ```` ```bash ````, ```` ```sh ```` and
  ```` ```console ```` blocks pass ``bash -n``; ```` ```yaml ```` blocks parse.
- Blocks whose fence carries ``{test}`` are also run, page by page, in order, in a fresh
  temporary folder (the convention is described in ``docs/development.md``):

  * ```` ```python {test} ```` runs as a script and must exit with 0;
  * ```` ```bash {test} ```` runs to completion with ``bash -e`` and must exit with 0;
  * ```` ```bash {test=background} ```` is started (a ``dask scheduler``, a
    ``dask worker``) and left running; when the page is done, its process group is
    SIGKILLed and must be gone.

  So the deployment guide's ``dask scheduler`` / ``dask worker`` commands and its check
  script run as written, on 127.0.0.1.  The one change: a port the page names (8786,
  8787) that is taken on this machine is replaced by a free one in all its blocks.
- The settings table lists every ``dmlkit.*`` setting with its default, and the README's
  relative links lead to files that exist.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests._cluster_procs import _DIE_WITH_PARENT, proc_env

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts) + [REPO / "README.md"]

PYTHON = {"python", "py", "python3"}
SHELL = {"bash", "sh", "console", "shell"}
YAML = {"yaml", "yml"}
OTHER = {"text", "none", ""}  # shown, not checked (messages, a Dockerfile)
TEST_ATTRS = {"{test}", "{test=background}"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_PORTS = re.compile(r"(?<![\d.])(8786|8787)(?!\d)")


@dataclasses.dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    attrs: str
    code: str

    @property
    def where(self):
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page (CommonMark fences, indented ones in
    lists included; the block's text loses the fence's indentation)."""
    out = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None or (m["fence"][0] == "`" and "`" in m["info"]):
            i += 1
            continue
        indent, fence, info = len(m["indent"]), m["fence"], m["info"].strip()
        body = []
        j = i + 1
        while j < len(lines):
            c = _FENCE.match(lines[j])
            if c and c["fence"][0] == fence[0] and len(c["fence"]) >= len(fence) \
                    and not c["info"].strip():
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        else:
            raise AssertionError(f"{page.relative_to(REPO)}:{i + 1}: unclosed code fence")
        lang, _, attrs = info.partition(" ")
        out.append(Block(page, i + 1, lang.lower(), attrs.strip(), "\n".join(body) + "\n"))
        i = j + 1
    return out


ALL_BLOCKS = [b for page in PAGES for b in blocks_of(page)]


def _ids(pages):
    return [str(p.relative_to(REPO)) for p in pages]


def test_pages_were_found():
    names = {str(p.relative_to(REPO)) for p in PAGES}
    assert {"README.md", "docs/index.md", "docs/deployment/cli.md"} <= names
    assert sum(b.lang in PYTHON for b in ALL_BLOCKS) >= 10


def test_every_block_has_a_checked_language():
    """A block is Python, shell, YAML, plain text or a MyST directive, so that nothing
    skips the checks below by a typo in its language; ``{test}`` only on what runs."""
    bad = []
    for b in ALL_BLOCKS:
        directive = b.lang.startswith("{") and b.lang.endswith("}")
        if not (directive or b.lang in PYTHON | SHELL | YAML | OTHER):
            bad.append(f"{b.where}: language {b.lang!r}")
        if b.attrs and (b.attrs not in TEST_ATTRS or directive):
            bad.append(f"{b.where}: fence attributes {b.attrs!r} (known: {sorted(TEST_ATTRS)})")
        if b.attrs == "{test=background}" and b.lang not in SHELL:
            bad.append(f"{b.where}: only shell blocks run in the background")
        if b.attrs == "{test}" and b.lang not in PYTHON | {"bash", "sh"}:
            bad.append(f"{b.where}: {{test}} runs python and bash blocks only")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_python_blocks_compile(page):
    errors = []
    for b in blocks_of(page):
        if b.lang in PYTHON:
            try:
                compile(b.code, b.where, "exec")
            except SyntaxError as e:
                errors.append(f"{b.where} (+{e.lineno}): {e.msg}")
    assert not errors, "\n".join(errors)


def _shell_text(b: Block) -> str:
    """The commands of a shell block: a ``console`` block's ``$ `` lines (the rest is
    output), any other block whole."""
    if b.lang == "console":
        cmds = [ln[2:] for ln in b.code.splitlines() if ln.startswith("$ ")]
        return "\n".join(cmds) + "\n"
    return b.code


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_shell_blocks_parse(page):
    errors = []
    for b in blocks_of(page):
        if b.lang in SHELL:
            r = subprocess.run(["bash", "-n"], input=_shell_text(b), text=True,
                               capture_output=True)
            if r.returncode:
                errors.append(f"{b.where}: {r.stderr.strip()}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_yaml_blocks_parse(page):
    errors = []
    for b in blocks_of(page):
        if b.lang in YAML:
            try:
                docs = list(yaml.safe_load_all(b.code))
            except yaml.YAMLError as e:
                errors.append(f"{b.where}: {e}")
                continue
            if not any(d for d in docs):
                errors.append(f"{b.where}: empty YAML")
    assert not errors, "\n".join(errors)


def test_settings_table_lists_every_setting_with_its_default():
    from dmlkit._config import DEFAULTS

    rows = {}
    for line in (DOCS / "api" / "config.md").read_text().splitlines():
        m = re.match(r"\| `dmlkit\.([a-z-]+)` \| `([^`]*)` \| `(DASK_DMLKIT__[A-Z_]+)` \|", line)
        if m:
            rows[m[1]] = (m[2], m[3])
    assert set(rows) == set(DEFAULTS["dmlkit"])
    for name, default in DEFAULTS["dmlkit"].items():
        assert rows[name][0] == str(default), name
        assert rows[name][1] == "DASK_DMLKIT__" + name.upper().replace("-", "_"), name


def test_environment_variables_name_the_settings(monkeypatch):
    """The settings page's rule: ``DASK_DMLKIT__BLOCK_SIZE`` is ``dmlkit.block-size``."""
    import dask

    monkeypatch.setenv("DASK_DMLKIT__BLOCK_SIZE", "64MiB")
    monkeypatch.setenv("DASK_DMLKIT__CHECK_WORKERS", "False")
    config = {}
    dask.config.refresh(config=config)  # what a new process starts from (none of ours)
    dask.config.update(config, dask.config.collect_env())
    with dask.config.set(config):
        assert dask.config.get("dmlkit.block-size") == "64MiB"
        assert dask.config.get("dmlkit.check-workers") is False


def test_readme_links_exist():
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in links if "://" not in t and not t.startswith("mailto:")]
    assert local, "the README links into the docs"
    missing = [t for t in local if not (REPO / t).exists()]
    assert not missing, missing


# -- running the {test} blocks ---------------------------------------------------------
RUN_PAGES = [p for p in PAGES if any(b.attrs in TEST_ATTRS for b in blocks_of(p))]


_CLAIM_LOCK = threading.Lock()
_CLAIMED: set[int] = set()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_gone(pgid: int, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # pragma: no cover - a reused id of another user
            return True
        time.sleep(0.05)
    return False


class _Page:
    """Runs one page's ``{test}`` blocks in ``folder``; ``close()`` kills what it started."""

    def __init__(self, page: Path, folder: Path):
        self.page, self.folder = page, folder
        self.env = proc_env()
        self.env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                            self.env.get("PATH", "")])
        self.env.pop("DASK_CONFIG", None)
        for k in [k for k in self.env if k.startswith("DASK_DMLKIT__")]:
            del self.env[k]
        self.background: list[tuple[subprocess.Popen, Path]] = []
        self.blocks = [b for b in blocks_of(page) if b.attrs in TEST_ATTRS]
        text = "".join(b.code for b in self.blocks)
        with _CLAIM_LOCK:  # pages run concurrently: one page per port
            self.ports = {}
            for p in sorted({int(x) for x in _PORTS.findall(text)}):
                self.ports[p] = p if p not in _CLAIMED and _port_free(p) else _free_port()
                _CLAIMED.add(self.ports[p])

    def code(self, b: Block) -> str:
        return _PORTS.sub(lambda m: str(self.ports[int(m[1])]), b.code)

    def logs(self) -> str:
        out = []
        for proc, log in self.background:
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            out.append(f"--- {log.name} ({state}):\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)

    def run(self, b: Block, timeout=240):
        code = self.code(b)
        n = len(self.background)
        if b.attrs == "{test=background}":
            log = self.folder / f"background-{n}-line{b.line}.log"
            with open(log, "wb") as f:
                proc = subprocess.Popen(_DIE_WITH_PARENT + ["bash", "-c", code], cwd=self.folder,
                                        env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            self.background.append((proc, log))
            return
        for proc, log in self.background:
            assert proc.poll() is None, f"{log.name} exited before {b.where}:\n{self.logs()}"
        if b.lang in PYTHON:
            script = self.folder / f"block_line{b.line}.py"
            script.write_text(code)
            args = [sys.executable, str(script)]
        else:
            args = ["bash", "-e", "-c", code]
        r = subprocess.run(args, cwd=self.folder, env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        assert r.returncode == 0, (f"{b.where} exited with {r.returncode}\n--- stdout:\n"
                                   f"{r.stdout[-3000:]}\n--- stderr:\n{r.stderr[-5000:]}\n"
                                   f"{self.logs()}")
        return r

    def close(self):
        left = []
        for proc, log in self.background:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
            if not _group_gone(proc.pid):
                left.append(log.name)
        return left


def _run_page(page: Path, folder: Path):
    """Run ``page``'s ``{test}`` blocks in ``folder``; raises what went wrong."""
    blocks = [b for b in blocks_of(page) if b.attrs in TEST_ATTRS]
    if any("openssl" in b.code for b in blocks) and shutil.which("openssl") is None:
        pytest.skip("the page's commands need the openssl command")
    assert any(b.lang in PYTHON for b in blocks), "a runnable page runs some Python"
    runner = _Page(page, folder)
    try:
        for b in blocks:
            runner.run(b)
    finally:
        left = runner.close()
    assert not left, f"processes left running: {left}"


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    """Every runnable page, run concurrently (each mostly waits for processes to start),
    in its own folder: {page: the exception it raised, or None}."""
    from concurrent.futures import ThreadPoolExecutor

    def one(page):
        try:
            _run_page(page, tmp_path_factory.mktemp(page.stem))
        except BaseException as e:  # noqa: BLE001 - re-raised by the page's own test
            return e
        return None

    # pytest creates its base temporary folder on first use, and threads racing to
    # create it get different ones ("... is not a normalized and relative path")
    tmp_path_factory.getbasetemp()
    with ThreadPoolExecutor(max_workers=len(RUN_PAGES)) as pool:
        return dict(zip(RUN_PAGES, pool.map(one, RUN_PAGES), strict=True))


@pytest.mark.parametrize("page", RUN_PAGES, ids=_ids(RUN_PAGES))
def test_runnable_blocks_run_as_written(page, page_runs):
    error = page_runs[page]
    if error is not None:
        raise error


def test_the_deployment_guide_runs_a_cluster():
    """The CLI guide's runnable blocks are what the page promises: a scheduler and
    workers on 127.0.0.1 in the background, then a Python check that fits on them."""
    blocks = [b for b in blocks_of(DOCS / "deployment" / "cli.md") if b.attrs in TEST_ATTRS]
    background = [b.code for b in blocks if b.attrs == "{test=background}"]
    assert len(background) == 2
    assert background[0].startswith("dask scheduler --host 127.0.0.1")
    assert "dask worker tcp://127.0.0.1:8786" in background[1]
    assert all("--dashboard-address 127.0.0.1:" in c for c in background)
    check = [b.code for b in blocks if b.lang in PYTHON]
    assert len(check) == 1 and "get_versions(check=True" in check[0] and ".fit(" in check[0]
