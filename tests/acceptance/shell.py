"""Running Breakwater's commands the way a person does: in a subprocess whose environment is
empty except PATH (the virtualenv's bin first) and a fresh HOME. Nothing the Makefile or
conftest exports (RAY_AUTH_MODE, BREAKWATER_*) reaches it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """PATH and HOME only, plus what a test says the person typed (`extra`)."""
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": f"{VENV_BIN}:{SYSTEM_PATH}", "HOME": str(home), **extra}


def checkout_copy(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and not ignored), with the
    virtualenv linked in: `make` then finds it installed and does not build a second one."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)  # keeps mtimes: make sees the venv as up to date
    (dest / ".venv").symlink_to(VENV_BIN.parent)
    installed = VENV_BIN.parent / ".installed"
    if installed.exists():
        # `make test` installed the venv before this runs: the copy's make must not reinstall it
        # (an editable install from the copy would point the shared venv at a folder that goes).
        # A second older than the stamp, in nanoseconds: a float time can round up past the
        # stamp, and a pyproject.toml newer by a microsecond made make reinstall from the copy.
        older = installed.stat().st_mtime_ns - 1_000_000_000
        os.utime(dest / "pyproject.toml", ns=(older, older))
    return dest


def processes_of(home: Path) -> list[psutil.Process]:
    """Every process that inherited this HOME: what the commands of one test started,
    daemons (`ray start`) included, and nothing else on the machine."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("HOME") == str(home):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@contextmanager
def owned_processes(home: Path) -> Iterator[None]:
    """End, afterwards, exactly the processes that this HOME's commands left running."""
    try:
        yield
    finally:
        for process in processes_of(home):
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(processes_of(home), timeout=30)


def run(
    argv: list[str], *, home: Path, cwd: Path = ROOT, timeout_s: float = 300, stdin: bytes | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """One command, as typed in a clean shell."""
    return subprocess.run(
        argv,
        cwd=cwd,
        env=clean_env(home, **env),
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
