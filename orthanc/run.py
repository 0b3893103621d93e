#!/usr/bin/python3
"""Run a real Orthanc (Debian's /usr/sbin/Orthanc) with the UniMed plugin.

  orthanc/run.py --plugin build/plugin/libOrthancUniMed.so --model build/ref/small
                 [--workdir DIR] [--http-port N] [--dicom-port N] [--set KEY=JSON ...]

Starts Orthanc on free loopback ports with a temporary storage folder and a
generated configuration (the shipped plugin/unimed.json plus the settings
below), waits until it answers, prints its address, and stops it cleanly on
Ctrl-C. Used as a module by the integration tests (tests/plugin/):

    from run import Orthanc
    with Orthanc(plugin, model_dir) as o:
        o.get("/unimed/status")
        o.kill9(); o.start()      # crash and restart on the same storage

Orthanc 1.10 has no option to choose the listening address: the generated
configuration refuses HTTP clients other than the local host
("RemoteAccessAllowed": false) and DICOM peers other than the declared
loopback modality ("DicomAlwaysAllowStore": false, "DicomCheckModalityHost").
"""

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ORTHANC_BIN = "/usr/sbin/Orthanc"
SHIPPED_CONFIG = os.path.join(REPO, "plugin", "unimed.json")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_comments(text):
    """Orthanc's configuration files allow /* */ and // comments (outside strings)."""
    out, i, n, in_str = [], 0, len(text), False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j - 1
        else:
            out.append(c)
        i += 1
    return "".join(out)


def shipped_config():
    with open(SHIPPED_CONFIG) as f:
        return json.loads(strip_comments(f.read()))


class Orthanc:
    """One Orthanc server with the plugin, on its own storage folder."""

    def __init__(self, plugin, model_dir=None, workdir=None, unimed=None, extra=None,
                 users=None, http_port=None, dicom_port=None, verbose=False, declare_names=True):
        self.plugin = os.path.abspath(plugin)
        self.own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="unimed-orthanc-")
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        self.aet = "UNIMEDTEST"
        self.users = users or {}
        self.proc = None
        self.log_path = os.path.join(self.workdir, "orthanc.log")
        self.verbose = verbose
        self.url = "http://127.0.0.1:%d" % self.http_port
        self.auth = None
        if self.users:
            user, pw = next(iter(self.users.items()))
            self.auth = "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()
        self.config_dir = os.path.join(self.workdir, "config")
        self.declare_names = declare_names
        self.write_config(model_dir, unimed or {}, extra or {})

    # ---- configuration ----
    def write_config(self, model_dir, unimed, extra):
        os.makedirs(self.config_dir, exist_ok=True)
        storage = os.path.join(self.workdir, "storage")
        os.makedirs(storage, exist_ok=True)
        cfg = {
            "Name": "UniMed test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {"storescu": ["STORESCU", "127.0.0.1", 104]},
            "Plugins": [self.plugin],
            "StableAge": 2,
            "SaveJobs": False,
            "HttpThreadsCount": 50,
            "ConcurrentJobs": 1,
            "DicomScpTimeout": 30,
            "StorageCompression": False,
            "OverwriteInstances": False,
        }
        if self.declare_names:
            # Names for the plugin's metadata and attachment (optional).
            cfg["UserMetadata"] = {"UniMedState": 4600, "UniMedFindings": 4601}
            cfg["UserContentType"] = {"UniMedEmbeddings": [4602, "application/json"]}
        plugin_cfg = shipped_config()
        plugin_cfg["UniMed"].pop("ModelDirectory", None)
        if model_dir:
            plugin_cfg["UniMed"]["ModelDirectory"] = os.path.abspath(model_dir)
        plugin_cfg["UniMed"]["CacheDirectory"] = os.path.join(self.workdir, "cache")
        plugin_cfg["UniMed"].update(unimed)
        for k, v in extra.items():
            cfg[k] = v
        with open(os.path.join(self.config_dir, "orthanc.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        with open(os.path.join(self.config_dir, "unimed.json"), "w") as f:
            json.dump(plugin_cfg, f, indent=2)

    # ---- process ----
    def start(self, timeout=120):
        if self.proc and self.proc.poll() is None:
            raise RuntimeError("Orthanc is already running")
        log = open(self.log_path, "a")
        args = [ORTHANC_BIN]
        if self.verbose:
            args.append("--verbose")
        args.append(self.config_dir)
        env = dict(os.environ)
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.workdir, start_new_session=True)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("Orthanc exited with code %s; log:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                status, _, _ = self.request("GET", "/system", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("Orthanc did not answer within %ds; log:\n%s" % (timeout, self.log_tail()))

    def stop(self, timeout=120):
        """Clean stop (SIGTERM, as systemd does); SIGKILL if it hangs."""
        if not self.proc or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self):
        self.stop()
        if self.own_workdir and not os.environ.get("UNIMED_KEEP_ORTHANC"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def log_tail(self, n=60):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # ---- HTTP ----
    def request(self, method, path, body=None, headers=None, timeout=60, auth=True):
        h = dict(headers or {})
        if auth and self.auth:
            h["Authorization"] = self.auth
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def get(self, path, **kw):
        status, body, _ = self.request("GET", path, **kw)
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, body

    def post(self, path, body=None, **kw):
        status, data, _ = self.request("POST", path, body=body, **kw)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plugin", required=True, help="libOrthancUniMed.so")
    ap.add_argument("--model", help="model directory (UniMed.ModelDirectory)")
    ap.add_argument("--workdir", help="storage + configuration folder (default: a new temporary one)")
    ap.add_argument("--http-port", type=int)
    ap.add_argument("--dicom-port", type=int)
    ap.add_argument("--user", action="append", default=[], help="USER:PASSWORD (enables authentication)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="a UniMed setting, e.g. --set Workers=2")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    unimed = {}
    for s in a.set:
        k, _, v = s.partition("=")
        unimed[k] = json.loads(v)
    users = dict(u.split(":", 1) for u in a.user)
    o = Orthanc(a.plugin, a.model, workdir=a.workdir, unimed=unimed, users=users,
                http_port=a.http_port, dicom_port=a.dicom_port, verbose=a.verbose)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        o.start()
        print(json.dumps({"url": o.url, "http_port": o.http_port, "dicom_port": o.dicom_port,
                          "aet": o.aet, "pid": o.proc.pid, "workdir": o.workdir,
                          "log": o.log_path}), flush=True)
        while not stop and o.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        rc = o.stop()
        if a.workdir is None:
            o.cleanup()
    return 0 if rc in (0, None) else 1


if __name__ == "__main__":
    sys.exit(main())
