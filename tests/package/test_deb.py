#!/usr/bin/python3
"""package_deb: the Debian package as an admin meets it.

Builds unimed-orthanc_<version>_<arch>.deb (scripts/package.sh, in
$UNIMED_DEB_BUILD_DIR), installs it into THIS system with dpkg -i, starts
Orthanc the way Debian's orthanc.service does (/usr/sbin/Orthanc /etc/orthanc
as user orthanc), checks that the plugin loads with the packaged
configuration (GET /unimed/status) and analyses a study sent over C-STORE
(an SR appears; /usr/bin/unimed reads it), then stops Orthanc, removes the
package (dpkg -r keeps the conffile, dpkg --purge drops it) and puts back
what it touched: a running orthanc service is stopped first and started
again; if Debian's ports 8042/4242 are taken by something else, they are
changed in /etc/orthanc/orthanc.json as an admin would (another *.json may
not redefine a key) and the file is restored byte for byte; the Orthanc
database is removed if the test created it, else the test study is deleted.

Needs root and dpkg (skips, exit 77, otherwise): run on throwaway machines."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PKG = "unimed-orthanc"
CONF = "/etc/orthanc"
DB = "/var/lib/orthanc/db-v6"

failures = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg, flush=True)
    if not cond:
        failures.append(msg)
    return cond


def run(cmd, **kw):
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def port_busy(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return False
        except OSError:
            return True


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and "installed" in r.stdout and "not-installed" not in r.stdout


def http(port, method, path, body=None, headers=None, timeout=30):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read()
            return r.status, data
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def jget(port, path):
    st, data = http(port, "GET", path)
    try:
        return st, json.loads(data)
    except ValueError:
        return st, data


def service_running():
    if os.path.isdir("/run/systemd/system"):
        return subprocess.run(["systemctl", "is-active", "--quiet", "orthanc"]).returncode == 0
    if os.path.exists("/etc/init.d/orthanc"):
        return subprocess.run(["/etc/init.d/orthanc", "status"], capture_output=True).returncode == 0
    return False


def service(action):
    if os.path.isdir("/run/systemd/system"):
        return run(["systemctl", action, "orthanc"])
    return run(["/etc/init.d/orthanc", action])


def main():
    if os.geteuid() != 0:
        print("SKIP: not root (the test installs a package into the system)")
        return 77
    for tool in ("dpkg", "dpkg-deb", "apt-get", "storescu"):
        if not shutil.which(tool):
            print("SKIP: %s not found" % tool)
            return 77
    if not os.path.isfile("/usr/sbin/Orthanc") or not os.path.isfile(os.path.join(CONF, "orthanc.json")):
        print("SKIP: Debian's orthanc package is not installed")
        return 77
    if installed(PKG):
        print("SKIP: %s is already installed on this machine; not touching it" % PKG)
        return 77

    build = os.environ.get("UNIMED_DEB_BUILD_DIR", os.path.join(REPO, "build-deb"))
    tmp = tempfile.mkdtemp(prefix="unimed-deb-test-")
    os.chmod(tmp, 0o755)
    orthanc_json = os.path.join(CONF, "orthanc.json")
    saved_json = open(orthanc_json, "rb").read()
    db_existed = os.path.exists(DB)
    was_running = service_running()
    proc = None
    study = None
    port = 8042
    try:
        # ---- build ----
        t0 = time.time()
        r = run([os.path.join(REPO, "scripts", "package.sh"), "--no-setup", build], cwd=REPO)
        debs = [l for l in r.stdout.splitlines() if l.endswith(".deb")]
        if not check(r.returncode == 0 and debs, "scripts/package.sh builds the package (%.0f s)" % (time.time() - t0)):
            print(r.stdout[-3000:], r.stderr[-3000:])
            return 1
        deb = debs[-1] if os.path.isabs(debs[-1]) else os.path.join(REPO, debs[-1])
        ver = subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True, text=True).stdout.strip()
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
        check(os.path.basename(deb) == "%s_%s_%s.deb" % (PKG, ver, arch), "file name %s" % os.path.basename(deb))
        depends = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True, text=True).stdout
        check("orthanc" in depends and "libopenblas" in depends and "libdcmtk" in depends,
              "Depends (dpkg-shlibdeps + orthanc): %s" % depends.strip())
        conffiles = subprocess.run(["dpkg-deb", "-I", deb, "conffiles"], capture_output=True, text=True).stdout
        check("/etc/orthanc/unimed.json" in conffiles.split(), "/etc/orthanc/unimed.json is a conffile")

        # ---- install ----
        if was_running:
            service("stop")
        r = run(["dpkg", "-i", deb])
        if not check(r.returncode == 0, "dpkg -i %s" % os.path.basename(deb)):
            print(r.stdout, r.stderr)
            return 1
        for f in ("/usr/share/orthanc/plugins/libOrthancUniMed.so", "/etc/orthanc/unimed.json", "/usr/bin/unimed",
                  "/usr/share/unimed/labelsets/modality.json"):
            check(os.path.exists(f), "installed: " + f)
        if os.path.exists(os.path.join(build, "tools", "train", "unimed-train")):
            check(os.path.exists("/usr/bin/unimed-train"), "installed: /usr/bin/unimed-train (its target is built)")
        demo = "/usr/share/unimed/demo-model"
        have_demo = os.path.isfile(os.path.join(demo, "model.safetensors"))
        print("demo model in the package: %s" % have_demo)
        r = run(["/usr/bin/unimed", "info", "--model", demo]) if have_demo else None
        if r is not None:
            check(r.returncode == 0, "/usr/bin/unimed info --model %s: %s" % (demo, r.stdout.strip()[:200]))

        # ---- ports: Debian's, unless taken (then edited like an admin would) ----
        port, dport = 8042, 4242
        if port_busy(port) or port_busy(dport):
            port, dport = free_port(), free_port()
            text = saved_json.decode()
            text, n1 = re.subn(r'("HttpPort"\s*:\s*)\d+', r"\g<1>%d" % port, text, count=1)
            text, n2 = re.subn(r'("DicomPort"\s*:\s*)\d+', r"\g<1>%d" % dport, text, count=1)
            if not check(n1 == 1 and n2 == 1, "8042/4242 taken: ports %d/%d set in orthanc.json" % (port, dport)):
                return 1
            with open(orthanc_json, "w") as f:
                f.write(text)
        if not have_demo:
            print("SKIP: the package was built without samples/demo-model; the plugin has no model to load")
            return 77

        # ---- start as orthanc.service does ----
        logdir = os.path.join(tmp, "log")
        os.makedirs(logdir)
        shutil.chown(logdir, "orthanc", "orthanc")
        # orthanc.service: User=orthanc Group=orthanc ExecStart=/usr/sbin/Orthanc --logdir=... /etc/orthanc
        # (the log goes to a temporary folder instead of /var/log/orthanc).
        cmd = ["/usr/sbin/Orthanc", "--logdir=" + logdir, CONF]
        print("$ (as orthanc) " + " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                user="orthanc", group="orthanc", extra_groups=[], cwd="/var/lib/orthanc",
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/var/lib/orthanc"})
        deadline = time.time() + 120
        up = False
        while time.time() < deadline and proc.poll() is None:
            try:
                if http(port, "GET", "/system", timeout=2)[0] == 200:
                    up = True
                    break
            except OSError:
                pass
            time.sleep(0.3)
        if not check(up, "Orthanc answers on port %d" % port):
            return 1
        st, status = jget(port, "/unimed/status")
        check(st == 200 and isinstance(status, dict) and status.get("enabled"),
              "GET /unimed/status: enabled with the packaged configuration: %s" % json.dumps(status)[:400])
        names = [ls.get("name") for ls in (status or {}).get("label_sets", [])] if isinstance(status, dict) else []
        check("modality" in names and any(n.startswith("demo-") for n in names), "label sets %s" % names)

        # ---- a study over C-STORE (Debian's default accepts any AET) ----
        samples = os.path.join(tmp, "samples")
        subprocess.run(["/usr/bin/python3", os.path.join(REPO, "samples", "make_samples.py"), samples],
                       check=True, capture_output=True)
        cxr = os.path.join(samples, "chest-xray-opacity", "cxr.dcm")
        r = run(["storescu", "-aet", "PKGTEST", "-aec", "ORTHANC", "127.0.0.1", str(dport), cxr])
        check(r.returncode == 0, "storescu into Orthanc: %s" % (r.stderr.strip()[-300:] or "ok"))
        import pydicom
        uid = str(pydicom.dcmread(cxr, stop_before_pixels=True).StudyInstanceUID)
        st, ans = http(port, "POST", "/tools/lookup", uid.encode())
        ids = [x["ID"] for x in json.loads(ans) if x.get("Type") == "Study"] if st == 200 else []
        if not check(len(ids) == 1, "the study is in Orthanc"):
            return 1
        study = ids[0]
        # Debian's StableAge is 60 s: the plugin analyses the study after that.
        print("waiting for the study to become stable (StableAge 60 s) and be analysed", flush=True)
        deadline = time.time() + 400
        res = None
        while time.time() < deadline:
            st, res = jget(port, "/unimed/studies/" + study)
            if st == 200:
                break
            time.sleep(2)
        check(st == 200 and res.get("state") == "done",
              "GET /unimed/studies/{id}: %s" % json.dumps(res)[:300])
        # The answer names the SR as {"instance_id", "sop_instance_uid"} (docs/openapi.json).
        sr_ref = (res or {}).get("sr") if isinstance(res, dict) else None
        sr = sr_ref.get("instance_id") if isinstance(sr_ref, dict) else None
        st, series = jget(port, "/studies/%s/series" % study)
        srs = [i for s in (series if st == 200 else []) if s["MainDicomTags"].get("Modality") == "SR"
               for i in s["Instances"]]
        check(sr and srs == [sr], "one SR stored in the study (%s)" % srs)
        if sr:
            st, data = http(port, "GET", "/instances/%s/file" % sr)
            path = os.path.join(tmp, "sr.dcm")
            with open(path, "wb") as f:
                f.write(data)
            r = run(["/usr/bin/unimed", "read-sr", path])
            check(r.returncode == 0 and "pneumonia" in r.stdout, "/usr/bin/unimed read-sr: %s" % r.stdout[:300])
    finally:
        # ---- leave the machine as it was ----
        if proc is not None and proc.poll() is None:
            if study:
                http(port, "DELETE", "/studies/" + study)
            proc.terminate()  # SIGTERM, as systemctl stop
            try:
                rc = proc.wait(120)
                check(rc == 0, "Orthanc stopped cleanly (exit %s)" % rc)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
                check(False, "Orthanc did not stop within 120 s")
        if open(orthanc_json, "rb").read() != saved_json:
            with open(orthanc_json, "wb") as f:
                f.write(saved_json)
            print("restored /etc/orthanc/orthanc.json")
        if installed(PKG):
            r = run(["dpkg", "-r", PKG])
            check(r.returncode == 0 and not os.path.exists("/usr/share/orthanc/plugins/libOrthancUniMed.so"),
                  "dpkg -r removes the plugin")
            check(os.path.exists("/etc/orthanc/unimed.json"), "dpkg -r keeps the conffile")
            r = run(["dpkg", "--purge", PKG])
            check(r.returncode == 0 and not os.path.exists("/etc/orthanc/unimed.json")
                  and not os.path.exists("/usr/share/unimed"), "dpkg --purge removes the conffile and /usr/share/unimed")
        if not db_existed and os.path.exists(DB):
            shutil.rmtree(DB)
            print("removed the Orthanc database %s the test created" % DB)
        if was_running:
            service("start")
        shutil.rmtree(tmp, ignore_errors=True)
    print("package_deb: " + ("passed" if not failures else "%d check(s) failed" % len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
