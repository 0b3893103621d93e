#!/usr/bin/python3
"""demo_end_to_end: scripts/demo.sh --no-wait end to end, as the README runs
it but with the binaries of this build, the small test model (--model) and
free ports: every sample study is sent over C-STORE, analysed by the plugin
in Debian's Orthanc, and listed in the findings table with probabilities;
Orthanc is stopped afterwards."""

import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def main():
    build = os.environ.get("UNIMED_BUILD_DIR", os.path.join(REPO, "build"))
    model = os.environ.get("UNIMED_TEST_MODEL", os.path.join(build, "ref", "small"))
    work = os.environ.get("UNIMED_WORK", os.path.join(build, "tests", "package", "demo"))
    if not os.path.isfile(os.path.join(model, "config.json")):
        print("FAIL: no test model at %s (fixture ref_small)" % model)
        return 1
    cmd = [os.path.join(REPO, "scripts", "demo.sh"), "--no-build", "--build-dir", build, "--model", model,
           "--http-port", "0", "--dicom-port", "0", "--out", work, "--no-wait"]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=540, cwd="/")
    out = r.stdout
    print(out)
    print(r.stderr, file=sys.stderr)
    failures = []

    def check(cond, msg):
        print(("ok   " if cond else "FAIL ") + msg, flush=True)
        if not cond:
            failures.append(msg)

    check(r.returncode == 0, "demo.sh exits 0 (%d) in %.0f s" % (r.returncode, time.time() - t0))
    studies = sorted(d for d in os.listdir(os.path.join(work, "samples"))
                     if os.path.isdir(os.path.join(work, "samples", d)))
    check(len(studies) >= 5, "the demo made %d sample studies: %s" % (len(studies), ", ".join(studies)))
    # The table: from its header to the first empty line.
    m = re.search(r"^study\s+modality\s+images\s+findings.*?\n-+.*?\n(.*?)\n\n", out, re.S | re.M)
    check(m is not None, "the findings table is printed")
    rows = {}
    if m:
        current = None
        for line in m.group(1).splitlines():
            if line and not line[0].isspace():
                current = line.split()[0]
                rows[current] = [line]
            elif current:
                rows[current].append(line)
    prob = re.compile(r"[\w-]+: .+ [01]\.\d\d")
    for s in studies:
        lines = rows.get(s)
        check(bool(lines) and all(prob.search(l) for l in lines),
              "%s: findings with probabilities: %s" % (s, " | ".join(x.strip() for x in lines or ["(missing)"])))
    check("explorer.html#study?uuid=" in out and "explorer.html#instance?uuid=" in out,
          "the Explorer links (study page, SR) are printed")
    check("/unimed/studies/" in out and "curl -s" in out, "REST curl examples are printed")
    check("Orthanc stopped" in out, "Orthanc was stopped")
    pid = re.search(r"pid (\d+)", out)
    if pid:
        alive = os.path.exists("/proc/%s" % pid.group(1)) and \
            "Orthanc" in open("/proc/%s/cmdline" % pid.group(1), errors="replace").read()
        check(not alive, "no Orthanc process left (pid %s)" % pid.group(1))
    print("demo_end_to_end: " + ("passed" if not failures else "%d check(s) failed" % len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
