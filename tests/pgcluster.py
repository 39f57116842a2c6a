"""A throwaway PostgreSQL cluster run with the pgserver wheel's binaries (both test suites).

postgres refuses to run as root, so as root the cluster runs as the unprivileged user
``pgserver`` (made when missing), and that user must be able to reach the binaries. The wheel
sits in the checkout's ``.venv``, and the checkout may be in a folder only its owner can enter
(``mktemp -d`` makes 0700 folders; so is root's home). Rather than opening up the checkout's
folders, the cluster runs the binaries from a copy inside its own folder (hard links where the
file is already readable by everyone: no space, no time; a copy otherwise).

Every failure raises ``ClusterError`` saying what was run, as whom, what it printed, and the
end of the server's log.
"""

# ruff: noqa: S603  (fixed commands: the wheel's PostgreSQL binaries)
from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

PG_USER = "pgserver"  # the name pgserver itself uses when it runs as root
START_SECONDS = 60
# Copied next to each other as in site-packages: the binaries' rpath is
# $ORIGIN/../../../pgserver.libs (the wheel's bundled libpq and friends).
INSTALL_PARTS = ("pgserver/pginstall/bin", "pgserver/pginstall/lib", "pgserver/pginstall/share")
BUNDLED_LIBS = "pgserver.libs"


class ClusterError(RuntimeError):
    """A step of the cluster's life that failed, with its cause in the message."""


def site_packages() -> Path:
    """The folder holding the pgserver package (and its bundled ``pgserver.libs``)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise ClusterError("the pgserver wheel is not installed (make install)")
    return Path(spec.origin).parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tail(path: Path, size: int = 4000) -> str:
    """The end of a log file ("" when it cannot be read)."""
    try:
        return path.read_bytes()[-size:].decode("utf-8", "replace")
    except OSError:
        return ""


def which(command: str) -> str:
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise ClusterError(f"{command} is not installed")
    return found


def cluster_user() -> pwd.struct_passwd | None:
    """Whom the cluster runs as: ``pgserver`` when we are root (made if missing), else None
    (the current user)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        result = subprocess.run(
            [which("useradd"), "-s", "/bin/bash", PG_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"useradd {PG_USER} failed (exit {result.returncode}): {result.stderr}"
            ) from None
        return pwd.getpwnam(PG_USER)


def unreachable(path: Path, user: pwd.struct_passwd) -> list[Path]:
    """The folders on the way to ``path`` (itself included) that ``user`` may not enter."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    blocked = []
    path = path.resolve()
    for folder in [*reversed(path.parents), path]:
        info = folder.stat()
        if info.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            blocked.append(folder)
    return blocked


def _place(source: Path, target: Path) -> None:
    """``target``: the same bytes as ``source``, readable (and, for a program, runnable) by all."""
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
        return
    mode = stat.S_IMODE(source.stat().st_mode)
    runnable = bool(mode & stat.S_IXUSR)
    wanted = mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
    if runnable:
        wanted |= stat.S_IXGRP | stat.S_IXOTH
    if wanted == mode:  # a hard link shares the mode: only when it needs no change
        with contextlib.suppress(OSError):
            os.link(source, target)
            return
    shutil.copyfile(source, target)
    target.chmod(wanted)


def _mirror(source: Path, target: Path) -> None:
    for folder, _, names in os.walk(source):
        out = target / Path(folder).relative_to(source)
        out.mkdir(parents=True, exist_ok=True)
        out.chmod(0o755)
        for name in names:
            _place(Path(folder) / name, out / name)


def reachable_install(dest: Path) -> Path:
    """A copy of the wheel's PostgreSQL (bin, lib, share and the bundled libraries) under
    ``dest``, readable by every user; returns its ``bin`` folder."""
    site = site_packages()
    for part in (*INSTALL_PARTS, BUNDLED_LIBS):
        if (site / part).is_dir():
            _mirror(site / part, dest / part)
    for folder in [dest, *(p for p in (dest / INSTALL_PARTS[0]).parents if dest in p.parents)]:
        folder.chmod(0o755)
    return dest / INSTALL_PARTS[0]


class Cluster:
    """A cluster in a fresh folder: ``init()``, ``start()``, ``stop(mode)``, ``destroy()``.

    Listens on 127.0.0.1:``port`` (kept across restarts); user ``postgres``, trust auth.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="mailslot-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.user = cluster_user()
        self.bin = site_packages() / INSTALL_PARTS[0]
        self.stops = 0

    @property
    def user_name(self) -> str:
        return self.user.pw_name if self.user is not None else pwd.getpwuid(os.geteuid()).pw_name

    def _describe(
        self, what: str, command: list[str], result: subprocess.CompletedProcess[str] | None
    ) -> str:
        lines = [f"{what}: {' '.join(command)} (as user {self.user_name})"]
        if result is not None:
            lines[0] += f" exited with {result.returncode}"
            lines += [
                f"--- stdout\n{result.stdout.strip()}",
                f"--- stderr\n{result.stderr.strip()}",
            ]
        log = tail(self.log)
        if log:
            lines.append(f"--- the end of {self.log}\n{log.strip()}")
        return "\n".join(lines)

    def _command(self, *args: str) -> list[str]:
        return [str(self.bin / args[0]), *args[1:]]

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = self._command(*args)
        as_user = self.user
        try:
            return subprocess.run(
                command,
                user=as_user.pw_uid if as_user is not None else None,
                group=as_user.pw_gid if as_user is not None else None,
                extra_groups=[] if as_user is not None else None,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.root,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                check=False,
            )
        except OSError as exc:
            raise ClusterError(f"{self._describe('cannot run', command, None)}\n{exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(
                self._describe(f"no answer within {timeout:.0f} s", command, None)
            ) from exc

    def _must(self, what: str, *args: str) -> str:
        result = self._run(*args)
        if result.returncode != 0:
            raise ClusterError(self._describe(what, self._command(*args), result))
        return result.stdout

    def init(self) -> None:
        """initdb into ``root/data``; as root, with binaries the cluster's user can reach."""
        self.sockets.mkdir(exist_ok=True)
        if self.user is not None:
            blocked = unreachable(self.root.parent, self.user)  # the root becomes the user's
            if blocked:
                raise ClusterError(
                    f"the cluster's folder {self.root} is out of reach of user {self.user_name} "
                    f"(it may not enter {', '.join(map(str, blocked))}): set TMPDIR to a folder "
                    "every user can enter"
                )
            self.bin = reachable_install(self.root / "install")
            for path in (self.root, self.sockets):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self._must(
            "initdb failed", "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} "
            "-c max_connections=400 -c fsync=off -c shared_buffers=64MB"
        )
        self._must(
            "pg_ctl start failed", "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(START_SECONDS), "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: the postmaster and every backend exit at once, as in a crash."""
        args = ("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        result = self._run(*args)
        if result.returncode != 0 and self.running:
            raise ClusterError(self._describe("pg_ctl stop failed", self._command(*args), result))
        self.stops += 1

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status").returncode == 0

    def url(self, database: str = "postgres", port: int | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._must(
            "psql failed", "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql,
        )  # fmt: skip

    def destroy(self) -> None:
        """Stop it (if it runs) and remove its folder."""
        with contextlib.suppress(Exception):
            if self.data.exists() and self.running:
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
