"""A real streaming replica of the local PostgreSQL, for the read-replica tests (connectors/replicas.py).

``StreamingReplica.start()`` takes a base backup of the primary the tests run on (``pg_basebackup -R``: the backup
knows how to follow its primary) into a temporary folder and starts a second server on a free port with the
installed PostgreSQL binaries; ``stop()`` and ``start()`` again stop and restart it mid-test; ``destroy()``
removes it. The server runs as the ``postgres`` system user when the tests run as root (PostgreSQL refuses root).

The primary must accept replication connections: ``wal_level`` replica (PostgreSQL's default) and
``max_wal_senders`` above 0 need a restart, so when they are missing the tests are skipped with the reason; a
``pg_hba.conf`` entry for replication from 127.0.0.1 only needs a reload, which ``allow_replication`` adds when
the tests may write the file (root, as in CI).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

BIN = Path(os.environ.get("POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
HBA_LINE = "host replication all 127.0.0.1/32 trust"
REPLAY_TIMEOUT_SECONDS = 30
BACKUP_ATTEMPTS = 3


class ReplicaUnavailable(Exception):
    """The machine cannot run a replica here; the message says why (the tests skip with it)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def allow_replication(primary: dict) -> None:
    """Check the primary can stream to a replica, adding the pg_hba entry (and reloading) when it is missing."""
    with psycopg.connect(**primary, dbname="postgres", autocommit=True) as conn:
        settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                     "('wal_level', 'max_wal_senders', 'hba_file')").fetchall())
        if settings.get("wal_level") not in ("replica", "logical") or int(settings.get("max_wal_senders", 0)) < 1:
            raise ReplicaUnavailable("the local PostgreSQL needs wal_level=replica and max_wal_senders > 0 "
                                     "(a restart) to stream to a replica")
        allowed = conn.execute(
            "SELECT count(*) FROM pg_hba_file_rules WHERE 'replication' = ANY(database) "
            "AND (address IS NULL OR address = '127.0.0.1' OR address = 'all') AND error IS NULL"
        ).fetchone()[0]
        if allowed:
            return
        hba = Path(settings["hba_file"])
        try:
            with hba.open("a") as file:
                file.write(f"\n# Added by the read-replica tests (tests/helpers/replica.py)\n{HBA_LINE}\n")
        except OSError as exc:
            raise ReplicaUnavailable(f"no replication entry in {hba} and it cannot be added: {exc}") from None
        conn.execute("SELECT pg_reload_conf()")


class StreamingReplica:
    def __init__(self, primary: dict):
        self.primary = primary  # psycopg.connect keyword arguments: host, port, user
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="pg-replica-"))
        self.data = self.directory / "data"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            owner = pwd.getpwnam(self._user)
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)

    def _run(self, *command: str, timeout: float = 300) -> None:
        result = subprocess.run(command, user=self._user, capture_output=True, text=True, timeout=timeout)
        if result.returncode:
            raise ReplicaUnavailable(f"{Path(command[0]).name} failed: {result.stderr.strip()[-500:]}")

    def create(self) -> StreamingReplica:
        allow_replication(self.primary)
        for attempt in range(BACKUP_ATTEMPTS):
            try:
                self._run(
                    str(BIN / "pg_basebackup"), "-h", self.primary["host"], "-p", str(self.primary["port"]),
                    "-U", self.primary["user"], "-D", str(self.data), "-X", "stream", "-R", "--checkpoint=fast",
                )
                break
            except ReplicaUnavailable:
                # On a shared server another session may end every connection (a test of a database outage):
                # the backup removed its folder and is simply taken again.
                if attempt == BACKUP_ATTEMPTS - 1:
                    raise
        # Debian keeps the configuration outside the data folder: the replica gets a minimal one of its own.
        # A hot standby needs these at least as high as its primary's.
        with psycopg.connect(**self.primary, dbname="postgres", autocommit=True) as conn:
            at_least = conn.execute(
                "SELECT string_agg(name || ' = ' || setting, E'\\n') FROM pg_settings WHERE name IN ('max_connections', "
                "'max_worker_processes', 'max_wal_senders', 'max_prepared_transactions', 'max_locks_per_transaction')"
            ).fetchone()[0]
        (self.data / "postgresql.conf").write_text(
            f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.directory}'\n"
            f"hot_standby = on\nshared_buffers = 32MB\nfsync = off\n{at_least}\n"
        )
        (self.data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        (self.data / "pg_ident.conf").write_text("")
        if self._user:
            owner = pwd.getpwnam(self._user)
            for path in (self.data / "postgresql.conf", self.data / "pg_hba.conf", self.data / "pg_ident.conf"):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        return self.start()

    def start(self) -> StreamingReplica:
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "server.log"), "-w",
                  "-t", "60", "start")
        return self

    def stop(self) -> None:
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop()
            except ReplicaUnavailable:
                pass
        shutil.rmtree(self.directory, ignore_errors=True)

    def query(self, dbname: str, sql: str):
        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.primary["user"], dbname=dbname,
                             autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    def wait_for_replay(self, dbname: str) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        with psycopg.connect(**self.primary, dbname=dbname, autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        deadline = time.monotonic() + REPLAY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            caught_up = self.query(dbname, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")[0][0]
            if caught_up:
                return
            time.sleep(0.02)  # polling the replica's progress: there is no notification to wait on
        raise AssertionError(f"the replica did not replay up to {target} within {REPLAY_TIMEOUT_SECONDS} s")
