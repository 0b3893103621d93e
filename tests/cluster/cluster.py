"""A cluster for the cluster tests and the cluster benchmark: a PostgreSQL
server created in a temporary folder (Debian's initdb/pg_ctl, run as an
unprivileged user when we are root: PostgreSQL refuses to run as root) and N
Debian Orthanc servers with Orthanc's PostgreSQL index plugin and the UniMed
plugin, sharing that database and one storage folder. Loopback only.

    with PostgresServer(folder) as pg:
        nodes = [cluster_node(i, plugin, model, pg, storage, lease=10) for i in range(3)]
"""

import glob
import os
import pwd
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "plugin"))

from common import Orthanc  # noqa: E402
from run import free_port  # noqa: E402

# Debian's orthanc-postgresql puts the plugin in Orthanc's plugin folder
# (and the versioned file in /usr/lib/orthanc).
PG_INDEX_PLUGINS = ["/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"] + sorted(
    glob.glob("/usr/lib/orthanc/libOrthancPostgreSQLIndex.so*"))
DB_NAME = "orthanc"
DB_USER = "unimed"


def pg_index_plugin():
    for p in PG_INDEX_PLUGINS:
        if os.path.isfile(p):
            return p
    return None


def pg_bin():
    """The newest installed PostgreSQL's bin folder (Debian:
    /usr/lib/postgresql/<major>/bin), or None."""
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.isfile(os.path.join(d, "initdb"))]
    found.sort(key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    return found[-1] if found else None


def why_skip():
    """The reason the cluster cannot run here, or None."""
    if not pg_index_plugin():
        return "Orthanc's PostgreSQL index plugin is not installed (apt-get install orthanc-postgresql)"
    if not pg_bin():
        return "PostgreSQL's server programs are not installed (apt-get install postgresql)"
    if not shutil.which("storescu"):
        return "storescu is missing (apt-get install dcmtk)"
    return None


class PostgresServer:
    """A PostgreSQL server of its own: data folder, socket folder and TCP port
    on 127.0.0.1; trust authentication (loopback only, a throw-away cluster)."""

    def __init__(self, folder):
        self.folder = folder
        self.data = os.path.join(folder, "pgdata")
        self.sockets = os.path.join(folder, "pgsock")
        self.log = os.path.join(folder, "postgres.log")
        self.port = free_port()
        self.bin = pg_bin()
        self.run_as = None
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run it as 'nobody'.
            self.run_as = pwd.getpwnam("nobody")

    def _cmd(self, args, **kw):
        if self.run_as:
            args = ["setpriv", "--reuid=%d" % self.run_as.pw_uid, "--regid=%d" % self.run_as.pw_gid,
                    "--clear-groups", "--"] + args
        env = dict(os.environ, LC_ALL="C", PGTZ="UTC")
        return subprocess.run(args, capture_output=True, text=True, env=env, cwd=self.folder, **kw)

    def _check(self, r, what):
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s %s" % (what, r.returncode, r.stdout, r.stderr))

    def start(self):
        os.makedirs(self.sockets, exist_ok=True)
        if self.run_as:
            os.chmod(self.folder, 0o755)
            # Each folder on the way must be traversable by the server's user.
            parent = os.path.dirname(self.folder)
            if os.stat(parent).st_mode & 0o001 == 0:
                raise RuntimeError("%s is not traversable by %s" % (parent, self.run_as.pw_name))
            for p in (self.sockets,):
                os.chown(p, self.run_as.pw_uid, self.run_as.pw_gid)
            open(self.log, "a").close()
            os.chown(self.log, self.run_as.pw_uid, self.run_as.pw_gid)
            os.makedirs(self.data, exist_ok=True)
            os.chown(self.data, self.run_as.pw_uid, self.run_as.pw_gid)
        r = self._cmd([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", DB_USER,
                       "--auth=trust", "--encoding=UTF8", "--no-sync"], timeout=120)
        self._check(r, "initdb")
        opts = ("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s "
                "-c fsync=off -c max_connections=100" % (self.port, self.sockets))
        r = self._cmd([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log,
                       "-o", opts, "-w", "-t", "60", "start"], timeout=90)
        self._check(r, "pg_ctl start")
        r = self._cmd([os.path.join(self.bin, "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                       "-U", DB_USER, DB_NAME], timeout=60)
        self._check(r, "createdb")
        return self

    def stop(self):
        if os.path.isdir(self.data):
            self._cmd([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                       "stop"], timeout=90)

    def sql(self, query):
        r = self._cmd([os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                       DB_USER, "-d", DB_NAME, "-At", "-c", query], timeout=60)
        self._check(r, "psql")
        return r.stdout

    def orthanc_section(self):
        """The "PostgreSQL" section of Orthanc's configuration. "Lock": false
        so that several Orthanc servers use the database together."""
        return {"EnableIndex": True, "EnableStorage": False, "Host": "127.0.0.1",
                "Port": self.port, "Database": DB_NAME, "Username": DB_USER, "Password": "",
                "Lock": False, "EnableSsl": False, "MaximumConnectionRetries": 10,
                "ConnectionRetryInterval": 1, "IndexConnectionsCount": 2}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def node_name(i):
    return "node-%s" % "abcdefghijklmnopqrstuvwxyz"[i]


def cluster_node(i, plugin, model, pg, storage, lease, workers=1, unimed=None, stable_age=2):
    """Orthanc server number i of the cluster (not started): the shared
    database and storage folder, its own identity and journal."""
    plugin = os.path.abspath(plugin)
    settings = {"Workers": workers, "ClaimLease": lease, "JournalProperty": 4700 + i}
    settings.update(unimed or {})
    extra = {
        "Plugins": [plugin, pg_index_plugin()],
        "PostgreSQL": pg.orthanc_section(),
        "StorageDirectory": storage,
        "IndexDirectory": storage,
        "CheckRevisions": True,
        "DatabaseServerIdentifier": node_name(i),
        "StableAge": stable_age,
        "Name": "UniMed cluster %s" % node_name(i),
    }
    o = Orthanc(plugin, model, unimed=settings, extra=extra)
    o.name = node_name(i)
    return o


def wait_all_started(nodes, timeout=120):
    t0 = time.time()
    for o in nodes:
        o.start(timeout=max(10, timeout - (time.time() - t0)))
