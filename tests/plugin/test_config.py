#!/usr/bin/python3
"""plugin_config: a wrong "UniMed" configuration stops the plugin with a
clear log line while Orthanc keeps serving; /unimed/status says why."""

import os
import shutil
import sys
import tempfile

from common import Check, Orthanc, env_paths, make_study, upload

CASES = [
    ("Workers 0", {"Workers": 0}, "Workers"),
    ("MaxSlices of the wrong type", {"MaxSlices": "8"}, "MaxSlices"),
    ("Enable not a boolean", {"Enable": "yes"}, "Enable"),
    ("Root without slashes", {"Root": "unimed"}, "Root"),
    ("LabelPrefix with a space", {"LabelPrefix": "uni med-"}, "LabelPrefix"),
    ("Labels not a boolean", {"Labels": "yes"}, "Labels"),
    ("missing ModelDirectory", {"ModelDirectory": None}, "ModelDirectory"),
    ("unloadable model", {"ModelDirectory": "EMPTY"}, "cannot load the model"),
    ("missing label-set file", {"LabelSets": ["/nonexistent/labels.json"]}, "/nonexistent/labels.json"),
    # The model works, but its model card is malformed: refused like a bad
    # label set (analysing without it would drop its warnings).
    ("malformed model card", {"ModelDirectory": "BADCARD"}, "model-card.json: label_sets[0].version"),
    ("disabled", {"Enable": False}, "Enable"),
]


def main():
    plugin, model = env_paths()
    ok = Check("plugin_config")
    empty = tempfile.mkdtemp(prefix="unimed-empty-model-")
    # The fixture's model (files linked) with a card whose entry has no version.
    bad_card = tempfile.mkdtemp(prefix="unimed-bad-card-")
    for f in os.listdir(model):
        if os.path.isfile(os.path.join(model, f)):
            os.symlink(os.path.abspath(os.path.join(model, f)), os.path.join(bad_card, f))
    with open(os.path.join(bad_card, "model-card.json"), "w") as f:
        f.write('{"format": "unimed-model-card/1", "label_sets": [{"name": "ct"}]}')
    for name, settings, expect in CASES:
        unimed = {}
        for k, v in settings.items():
            unimed[k] = {"EMPTY": empty, "BADCARD": bad_card}.get(v, v) if isinstance(v, str) else v
        o = Orthanc(plugin, None if settings.get("ModelDirectory", 1) is None else model, unimed={
            k: v for k, v in unimed.items() if v is not None})
        try:
            o.start()
            st, ans = o.get("/unimed/status")
            ok(st == 200 and ans["enabled"] is False and expect in ans.get("reason", ""),
               "%s: status enabled=false, reason: %s" % (name, ans.get("reason") if isinstance(ans, dict) else ans))
            st, ans = o.get("/unimed/findings?label=x")
            ok(st == 503 and "disabled" in ans.get("error", ""), "%s: other routes answer 503" % name)
            st, _ = o.get("/system")
            _, files = make_study("CT", 1, 1, seed=5)
            sid = upload(o, files)
            ok(st == 200 and sid, "%s: Orthanc keeps serving (upload works)" % name)
            log = o.log_tail(200)
            if name != "disabled":
                line = [l for l in log.splitlines() if l.startswith("E") and "UniMed" in l]
                ok(line and expect in line[0], "%s: error logged: %s" % (name, line[0][:200] if line else None))
        finally:
            o.stop()
            o.cleanup()
    os.rmdir(empty)
    shutil.rmtree(bad_card)
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
