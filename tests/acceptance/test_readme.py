"""Every shell command in README.md, as written, in a clean shell (PATH and a fresh HOME only).

The README is parsed, not copied: each ```sh block runs in document order in a copy of the
checkout, as a person following it would, with the exports and directory of the blocks
before it; each ```python block runs as `python -` at that point. The one command not run
is `make test`: this test is part of it. PostgreSQL and Redis are the machine's (make test
starts them as the README says); the Ray cluster is the one the README's own `ray start`
starts, ended afterwards by killing exactly the processes that inherited this test's HOME.
The README's own shown output of `make demo` must appear in what the demo printed.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis

from tests.acceptance.shell import ROOT, checkout_copy, clean_env, owned_processes

README = ROOT / "README.md"
NOT_RUN = re.compile(r"^make test\b")  # the test command itself, which runs this test
README_DATABASE = "ais"  # what the README's PostgreSQL example creates
README_PREFIX = "prod:"  # the README's Redis key prefix


@dataclass
class Block:
    line: int
    language: str
    text: str

    def script(self) -> str:
        if self.language == "python":
            return f"python - <<'PYTHON'\n{self.text}PYTHON\n"
        return "".join(line + "\n" for line in self.text.splitlines() if not NOT_RUN.match(line.strip()))


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks a person would run: ```sh and ```python, in order."""
    blocks = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        if match.group(1) in ("sh", "python"):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append(Block(line, match.group(1), match.group(2)))
    return blocks


def shown_demo_output(text: str) -> list[str]:
    """The lines of the README's `make demo` output that do not change between runs."""
    shown = re.search(r"`make demo` prints.*?\n```\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    assert shown, "README.md lost the output of make demo"
    lines = shown.group(1).splitlines()
    return [line for line in lines[1:] if not line.strip().startswith("elapsed")]  # line 1 names the job


def _reset_stores() -> None:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{README_DATABASE}" WITH (FORCE)')
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(f"{README_PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_the_readme_parses_into_runnable_blocks() -> None:
    blocks = readme_blocks(README.read_text())
    assert blocks[0].text.splitlines()[0].startswith("make demo")  # the two set-up commands come first
    assert blocks[0].text.splitlines()[1].startswith("make test")
    assert "make test" not in blocks[0].script()
    assert not any("[" in line and "--" in line for b in blocks for line in b.text.splitlines() if b.language == "sh")


@pytest.mark.timeout(1200)
def test_every_readme_command_works_in_a_clean_shell(tmp_path: Path) -> None:
    text = README.read_text()
    repo = checkout_copy(tmp_path / "breakwater")
    home = tmp_path / "home"
    env = clean_env(home)
    state, cwd = tmp_path / "state.sh", tmp_path / "cwd"
    cwd.write_text(str(repo))
    _reset_stores()
    outputs: list[str] = []
    with owned_processes(home):
        for block in readme_blocks(text):
            script = (
                "set -euo pipefail\n"
                f"if [ -f {state} ]; then source {state}; fi\n"
                f'cd "$(cat {cwd})"\n'
                "set -x\n"
                f"{block.script()}"
                "{ set +x; } 2>/dev/null\n"
                f"export -p > {state}\npwd > {cwd}\n"
            )
            result = subprocess.run(
                ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=900, check=False
            )
            outputs.append(result.stdout)
            traced = [line for line in result.stderr.splitlines() if line.startswith("+ ")]
            with (tmp_path / "transcript.txt").open("a") as transcript:  # what ran, for a person to read
                transcript.write(f"## README.md line {block.line}: exit {result.returncode}\n")
                transcript.writelines(line + "\n" for line in traced)
            assert result.returncode == 0, (
                f"README.md line {block.line}: the block exited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}"
            )
    _reset_stores()
    demo = outputs[0]
    for line in shown_demo_output(text):
        assert line in demo, f"make demo no longer prints the README's line {line!r}:\n{demo}"
