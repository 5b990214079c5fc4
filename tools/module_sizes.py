"""Lines of the estimator modules and the core at git revisions: all lines, and code
lines (neither blank, nor a comment, nor a docstring).

    python tools/module_sizes.py [REV ...]    # default: HEAD
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize

MODULES = ("dmlkit/cluster/_kmeans.py", "dmlkit/linear_model/_sgd.py",
           "dmlkit/recommendation/_als.py")


def _source(rev, path):
    try:
        return subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True,
                              text=True, check=True).stdout
    except subprocess.CalledProcessError:
        return None


def code_lines(src: str) -> int:
    docstrings = set()
    for node in ast.walk(ast.parse(src)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                            tokenize.DEDENT, tokenize.ENDMARKER):
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - docstrings)


def main(revs):
    core = subprocess.run(["git", "ls-tree", "--name-only", revs[-1], "dmlkit/_core/"],
                          capture_output=True, text=True, check=True).stdout.split()
    print("| module | " + " | ".join(f"{r}: lines (code)" for r in revs) + " |")
    print("|---" * (len(revs) + 1) + "|")
    for path in list(MODULES) + ["dmlkit/_core/ (all)"]:
        cells = []
        for rev in revs:
            paths = [p for p in core if p.endswith(".py")] if path.endswith("(all)") \
                else [path]
            srcs = [s for s in (_source(rev, p) for p in paths) if s is not None]
            total = sum(s.count("\n") for s in srcs)
            cells.append(f"{total} ({sum(code_lines(s) for s in srcs)})")
        print(f"| {path} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["HEAD"])
