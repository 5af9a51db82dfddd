"""A commit checked out beside this checkout (a temporary git worktree), for old-vs-new timings.

    with checkout("e8a2dd3") as root:   # a Path; removed afterwards
        subprocess.run([...], env={**os.environ, "PYTHONPATH": str(root)})

Used by ``replica_speed.py --base`` and ``chain_speed.py --base``.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: this checkout (the repository root)
HERE = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def checkout(commit: str) -> Iterator[Path]:
    """``commit`` as a detached git worktree in a temporary directory (removed on exit)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(HERE), "worktree", "add", "--detach", "-q", str(tree), commit],
            check=True,
        )
        try:
            yield tree
        finally:
            subprocess.run(
                ["git", "-C", str(HERE), "worktree", "remove", "--force", str(tree)], check=False
            )
