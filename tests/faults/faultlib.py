"""Shared helpers of the fault tests (tests/faults/): the plugin tests'
helpers (tests/plugin/common.py: sample studies, a real Orthanc, waiting)
plus what the fault tests need on top (status, settling, process memory)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "plugin"))

from common import (Check, Orthanc, dump, env_paths, make_instance, make_study,  # noqa: E402,F401
                    orthanc_session, sr_instances, study_result, upload, wait_for)


def status(o):
    st, s = o.get("/unimed/status")
    return s if st == 200 else None


def settled(o):
    """The status once nothing is new, queued or running (else None)."""
    s = status(o)
    if not s or s["catching_up"]:
        return None
    q = s["queue"]
    return s if q["queued"] == 0 and q["running"] == 0 and q["waiting_stable"] == 0 else None


def rss_kib(pid, field="VmRSS"):
    """Resident memory of a process (VmRSS, or VmHWM for the peak), KiB."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def skip_if_sanitizer():
    """Under the sanitizer build these tests are not registered; a direct run
    with UNIMED_SANITIZE set says why and skips."""
    if os.environ.get("UNIMED_SANITIZE"):
        print("skipped: Debian's Orthanc cannot load a sanitizer-instrumented plugin")
        sys.exit(77)
