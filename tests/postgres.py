"""A PostgreSQL server on 127.0.0.1 with a role and a database for MLflow's store and Optuna's
studies: Debian's initdb and pg_ctl (run as the `postgres` user when started by root, which they
refuse), its data in a directory of its own, the role's password in a `.pgpass` file, never in a
URL. For the tests, and for a person: `make postgres` prints what to export; `make postgres-stop`.
"""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .cluster import free_port

ROLE = "mnist_exp"


class PostgresError(Exception):
    """The server could not start: what is missing or what PostgreSQL said."""


def binaries() -> Path:
    """Debian's newest PostgreSQL binaries (/usr/lib/postgresql/<version>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[4]))
    if not found:
        raise PostgresError(
            "PostgreSQL's initdb and pg_ctl are missing: make postgres-install (Debian's)"
        )
    return found[-1].parent


def as_server(command: list, **options) -> subprocess.CompletedProcess:
    """Run a server command as the `postgres` user where this is root, else as this user."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, *map(str, command)], capture_output=True, text=True, timeout=120, **options
    )


def start(root: Path, addresses: tuple[str, ...] = ()) -> dict[str, str]:
    """Start a server whose data and socket live in a new directory (recorded in `root/data`),
    with the role `mnist_exp` owning the database `mnist_exp`; the URL (no password) and the
    environment its clients need (PGPASSFILE). It listens on 127.0.0.1 and on `addresses`, each
    open to its /24 (test hosts, tests/hosts.py)."""
    bin_dir = binaries()
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    # Not under root: the postgres user must reach it, and pytest's directories are root's only.
    data = Path(tempfile.mkdtemp(prefix="mnist_exp-postgres-"))
    (root / "data").write_text(str(data))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    (root / "port").write_text(str(port))
    steps = [
        [bin_dir / "initdb", "-D", data / "db", "-U", "postgres", "--auth-local=trust",
         "--auth-host=scram-sha-256"],
        [bin_dir / "pg_ctl", "-D", data / "db", "-l", data / "server.log", "-w", "-t", "60",
         "-o", f"-h {','.join(('127.0.0.1', *addresses))} -p {port} -k {data}", "start"],
    ]  # fmt: skip
    for step in steps:
        done = as_server(step)
        if done.returncode != 0:
            stop(root)
            raise PostgresError(f"{step[0].name} failed: {(done.stderr or done.stdout).strip()}")
        if step[0].name == "initdb":
            with open(data / "db" / "pg_hba.conf", "a") as hba:
                for address in addresses:
                    network = address.rpartition(".")[0] + ".0/24"
                    hba.write(f"host all all {network} scram-sha-256\n")
    password = secrets.token_urlsafe(18)
    psql(root, f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}'")
    psql(root, f"CREATE DATABASE {ROLE} OWNER {ROLE}")
    pgpass = root / "pgpass"
    pgpass.write_text(
        "".join(f"{a}:{port}:*:{ROLE}:{password}\n" for a in ("127.0.0.1", *addresses))
    )
    pgpass.chmod(0o600)  # libpq ignores a password file others can read
    return {"url": url(root), "PGPASSFILE": str(pgpass)}


def psql(root: Path, sql: str) -> str:
    """Run `sql` as the superuser over the server's socket; its output."""
    data, port = Path((root / "data").read_text()), (root / "port").read_text()
    done = as_server(
        [binaries() / "psql", "-h", data, "-p", port, "-U", "postgres", "-v", "ON_ERROR_STOP=1",
         "-qAt", "-c", sql]
    )  # fmt: skip
    if done.returncode != 0:
        raise PostgresError(f"psql {sql.split()[0]}: {done.stderr.strip()}")
    return done.stdout


def url(root: Path, database: str = ROLE, address: str = "127.0.0.1") -> str:
    """The `postgresql://` URL of a database of the server `root` describes (no password)."""
    return f"postgresql://{ROLE}@{address}:{(root / 'port').read_text()}/{database}"


def new_database(root: Path, name: str) -> str:
    """A new, empty database owned by the role; its URL."""
    psql(root, f"CREATE DATABASE {name} OWNER {ROLE}")
    return url(root, name)


def stop(root: Path) -> None:
    """Stop the server (fast shutdown) and remove its data."""
    record = root.resolve() / "data"
    if not record.is_file():
        return
    data = Path(record.read_text())
    if (data / "db").is_dir():
        as_server([binaries() / "pg_ctl", "-D", data / "db", "-m", "fast", "-w", "stop"])
    shutil.rmtree(data, ignore_errors=True)
    record.unlink()


def main() -> None:
    """`python -m tests.postgres start|stop [DIR]` (default DIR: outputs/postgres)."""
    action, root = sys.argv[1], Path(sys.argv[2] if len(sys.argv) > 2 else "outputs/postgres")
    if action == "stop":
        stop(root)
        print(f"stopped the PostgreSQL server of {root}")
        return
    try:
        env = start(root)
    except PostgresError as error:
        raise SystemExit(f"error: {error}") from None
    studies = new_database(root, "optuna")  # its own: both keep alembic_version
    print(f"PostgreSQL runs on 127.0.0.1; use it with\n  export PGPASSFILE={env['PGPASSFILE']}\n"
          f"  make server BACKEND={env['url']}\n"
          f"  python -m mnist_exp.run mlflow.tracking_uri={env['url']} ...\n"
          f"  python -m mnist_exp.run -m hparams_search=optuna "
          f"hydra.sweeper.storage={studies} ...\n"
          "stop it with make postgres-stop")  # fmt: skip


if __name__ == "__main__":
    main()
