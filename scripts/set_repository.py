"""Point the course at the GitHub repository it is published from: one setting, rewritten everywhere it appears.

    python scripts/set_repository.py OWNER/NAME

The repository lives in pyproject.toml ([tool.course] repository). This rewrites it there and in every file that
names it in a URL: the Colab badges (https://colab.research.google.com/github/OWNER/NAME/blob/main/...), the setup
cells' clone URLs (https://github.com/OWNER/NAME) and the README. Notebooks are edited as text, so nothing else in
them changes. When NAME is not finetuning-course, the clone is told to land in finetuning-course/ anyway, which is
where the setup cells look for it. tests/test_repository.py checks the result.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = "finetuning-course"  # where the setup cells clone the course on Colab (/content/finetuning-course)
SETTING = re.compile(r'(^\[tool\.course\][^\[]*?^repository\s*=\s*")([^"]+)(")', re.M | re.S)
TEXT_FILES = (".ipynb", ".md", ".py", ".toml", ".txt", ".yml", ".yaml", ".cfg", ".sh")
SKIP_DIRS = {".git", "runs", "__pycache__", ".ipynb_checkpoints", "node_modules"}


def current_repository(root: Path = ROOT) -> str:
    match = SETTING.search((root / "pyproject.toml").read_text())
    if not match:
        raise SystemExit("pyproject.toml has no [tool.course] repository = \"OWNER/NAME\"")
    return match[2]


def course_files(root: Path):
    """Every text file of the course (no virtualenvs, no runs/, no .git)."""
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(p in SKIP_DIRS or p.startswith(".venv") for p in parts[:-1]):
            continue
        if path.is_file() and (path.suffix in TEXT_FILES or path.name == "Makefile"):
            yield path


def rewrite(text: str, old: str, new: str) -> str:
    """The text with every URL naming `old` naming `new` instead (clone commands keep landing in FOLDER)."""
    end = r"(?=[/\s\"'\\)\]>]|\.git\b|$)"
    folder = "" if new.split("/")[1] == FOLDER else f" {FOLDER}"
    text = re.sub(rf"(git clone [^\n\"\\]*?https://github\.com/){re.escape(old)}(?: {FOLDER})?{end}",
                  lambda m: f"{m[1]}{new}{folder}", text)
    return re.sub(rf"(colab\.research\.google\.com/github/|github\.com/){re.escape(old)}{end}",
                  lambda m: f"{m[1]}{new}", text)


def set_repository(new: str, root: Path = ROOT) -> list[Path]:
    """Rewrite the setting and every file naming the old repository. Returns the files changed."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+", new):
        raise SystemExit(f"not a GitHub OWNER/NAME: {new!r}")
    old = current_repository(root)
    changed = []
    for path in course_files(root):
        text = path.read_text(encoding="utf-8")
        updated = rewrite(text, old, new)
        if path == root / "pyproject.toml":
            updated = SETTING.sub(lambda m: f"{m[1]}{new}{m[3]}", updated)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", help="OWNER/NAME of the GitHub repository the course is published from")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # tests run it on a copy
    args = parser.parse_args(argv)
    old = current_repository(args.root)
    changed = set_repository(args.repository, args.root)
    print(f"{old} -> {args.repository}: {len(changed)} files changed")
    for path in changed:
        print("  ", path.relative_to(args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
