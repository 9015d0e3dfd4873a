"""A throwaway PostgreSQL server for the store's tests: a cluster in a temporary folder, on a
free port of 127.0.0.1, password authentication, stopped and removed at the end.

Import the fixture in a test module (``from postgres_server import postgres_url``). Without
the server binaries the tests fail (``make test`` installs them with
scripts/ensure-postgres.sh), unless KURABE_SKIP_POSTGRES=1 is set.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "kurabe"


def server_bin_dir() -> Path | None:
    """The folder of initdb and pg_ctl: Debian's /usr/lib/postgresql/N/bin (newest), or
    PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the postgres user."""
    if os.geteuid() != 0:
        return command
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--", *command]
    pytest.fail("running as root, and no 'postgres' or 'nobody' user to run PostgreSQL as")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """postgresql://kurabe:PASSWORD@127.0.0.1:PORT/kurabe of a server started for the session
    (host connections need the password)."""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        if os.environ.get("KURABE_SKIP_POSTGRES") == "1":
            pytest.skip("KURABE_SKIP_POSTGRES=1: PostgreSQL tests not run")
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: run "
                    "`bash scripts/ensure-postgres.sh` (make test does), or set "
                    "KURABE_SKIP_POSTGRES=1 to skip these tests")
    root = Path(tempfile.mkdtemp(prefix="kurabe-pg-"))
    data, password = root / "data", secrets.token_hex(8)
    (root / "pwfile").write_text(password + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam(_as_server_user(["x"])[2])
        for path in (root, root / "pwfile"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = _free_port()

    def run(*command: str) -> None:
        done = subprocess.run(_as_server_user(list(command)), capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n"
                               f"{done.stdout}\n{done.stderr}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--pwfile", str(root / "pwfile"),
        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale",
        "--no-sync")
    try:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        run(str(bin_dir / "createdb"), "-h", str(root), "-p", str(port), "-U", USER, USER)
        yield f"postgresql://{USER}:{password}@127.0.0.1:{port}/{USER}"
    finally:
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m",
                                        "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
