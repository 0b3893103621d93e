#!/usr/bin/python3
"""plugin_labels: on Orthanc >= 1.12 the findings of each analysed study
become Orthanc labels (docs/PLUGIN.md, "Orthanc labels"; the rule in
docs/LABEL_SETS.md).

The expected labels of a study come from the rule as documented, applied to
the probabilities the plugin reports for it (GET /unimed/studies/{id}):
per label set, the findings at or above their threshold, the most probable
first, at most "max_per_study", named prefix + "orthanc_label". Checked:
labels after C-STORE and after REST upload; /tools/find with "Labels"
returns exactly the tagged studies; a user's and another plugin's labels
survive re-analysis while a stale one of ours goes; a new label set changes
only our labels; a failed study and a deleted one carry none of ours.
On an Orthanc without labels (1.10) the test is skipped with the reason."""

import json
import os
import sys
import tempfile
import time

from common import (Check, Orthanc, env_paths, make_study, store_study_over_dicom, study_result,
                    upload, orthanc_session)

PREFIX = "unimed-"


def label_set(version, alpha_name, max_per_study):
    def lab(name, value, **kw):
        return dict({"name": name, "code": {"value": value, "scheme": "99UNIMED",
                                            "meaning": name}}, **kw)
    return {
        "name": "labels-test",
        "version": version,
        "scoring": "softmax",
        "templates": ["an image showing {}."],
        "orthanc_labels": {"threshold": 0.0, "max_per_study": max_per_study},
        "labels": [
            lab("Alpha finding", "UM-9001", orthanc_label=alpha_name),
            lab("Beta", "UM-9002"),                         # default name: "beta"
            lab("Gamma", "UM-9003", orthanc_label=False),    # never a label
            lab("Delta", "UM-9004", orthanc_threshold=1.0),  # never reaches its threshold
            lab("Epsilon (mild)", "UM-9005"),                # default: "epsilon-mild"
        ],
    }


def expected_labels(answer, ls):
    """The documented rule, applied to the probabilities GET studies/{id}
    reports (its flat "scores", docs/openapi.json)."""
    best = {}
    for f in answer.get("scores", []):
        if f["label_set"] != ls["name"]:
            continue
        best[f["label"]] = max(best.get(f["label"], -1.0), float(f["probability"]))
    rule = ls["orthanc_labels"]
    cands = []
    for lab in ls["labels"]:
        name = lab.get("orthanc_label",
                       {"Beta": "beta", "Delta": "delta", "Epsilon (mild)": "epsilon-mild"}.get(
                           lab["name"]))
        threshold = lab.get("orthanc_threshold", rule["threshold"])
        p = best.get(lab["name"])
        if name and p is not None and p >= threshold:
            cands.append((-p, name))
    cands.sort()
    return {PREFIX + n for _, n in cands[:rule["max_per_study"]]}


def labels_of(o, study):
    st, ans = o.get("/studies/%s/labels" % study)
    assert st == 200, (st, ans)
    return set(ans)


def ours(labels):
    return {l for l in labels if l.startswith(PREFIX)}


def settled_labels(o, study, good, timeout=30):
    """The study's labels once good(labels) holds, else the last ones seen
    after timeout seconds."""
    deadline = time.time() + timeout
    while True:
        last = labels_of(o, study)
        if good(last) or time.time() > deadline:
            return last
        time.sleep(0.3)


def find_tagged(o, label):
    st, ans = o.post("/tools/find", {"Level": "Study", "Query": {}, "Labels": [label],
                                     "LabelsConstraint": "All"})
    assert st == 200, (st, ans)
    return set(ans)


def reanalyse(o, study):
    """POST analyze (queues it at once), then the final answer."""
    st, ans = o.post("/unimed/studies/%s/analyze" % study)
    assert st in (200, 202), (st, ans)
    return study_result(o, study, timeout=180)


def main():
    plugin, model = env_paths()
    ok = Check("plugin_labels")
    with tempfile.TemporaryDirectory(prefix="unimed-labels-") as tmp:
        ls_path = os.path.join(tmp, "labels-test.json")
        ls1 = label_set("1", "alpha", 2)
        with open(ls_path, "w") as f:
            json.dump(ls1, f)
        workdir = os.path.join(tmp, "orthanc")
        o = Orthanc(plugin, model, workdir=workdir, unimed={"LabelSets": [ls_path]})
        with orthanc_session(o, ok, 60):
            st, system = o.get("/system")
            if not system.get("HasLabels"):
                print("SKIP: Orthanc %s has no labels (they came with 1.12); there the findings "
                      "stay in the UniMedFindings metadata only (plugin_upload checks it)"
                      % system.get("Version"))
                return 77
            print("Orthanc %s, ApiVersion %s" % (system.get("Version"), system.get("ApiVersion")))

            # C-STORE (MR), REST (two CT studies), and a study that cannot be analysed.
            mr_uid, mr = make_study("MR", n_series=2, n_instances=2, seed=11, patient_id="PL1")
            mr_id = store_study_over_dicom(o, mr_uid, mr, tmp)
            ct1 = upload(o, make_study("CT", n_instances=2, seed=12, patient_id="PL2")[1])
            ct2 = upload(o, make_study("CT", n_instances=2, seed=13, patient_id="PL3")[1])
            bad = upload(o, make_study("CT", n_instances=1, seed=14, broken=True,
                                       patient_id="PL4")[1])
            studies = {"MR (C-STORE)": mr_id, "CT 1": ct1, "CT 2": ct2}

            expected = {}
            for name, sid in studies.items():
                st, r = study_result(o, sid, timeout=180)
                ok(st == 200 and r["state"] == "done", "%s analysed: %s" % (name, r.get("state")))
                expected[sid] = expected_labels(r, ls1)
                got = settled_labels(o, sid, lambda l: ours(l) == expected[sid])
                ok(got == expected[sid] and len(expected[sid]) == 2,
                   "%s carries exactly the 2 labels of the rule %s: %s"
                   % (name, sorted(expected[sid]), sorted(got)))
                ok(not any(l in got for l in (PREFIX + "gamma", PREFIX + "delta")),
                   "%s: no label for a finding with orthanc_label false or above its threshold"
                   % name)
            st, r = study_result(o, bad, timeout=180)
            ok(st == 200 and r["state"] == "failed", "broken study: %s" % r.get("state"))
            ok(not ours(labels_of(o, bad)), "the failed study carries none of our labels")

            # /tools/find with Labels: exactly the tagged studies.
            all_ours = set().union(*expected.values())
            for label in sorted(all_ours | {PREFIX + "gamma"}):
                want = {sid for sid, ls in expected.items() if label in ls}
                got = find_tagged(o, label)
                ok(got == want, "/tools/find Labels [%s]: %d studies, as tagged" % (label, len(want)))

            # Others' labels survive re-analysis; a stale one of ours goes.
            for lab in ("reviewed", "other-plugin_x", PREFIX + "stale"):
                st, _, _ = o.request("PUT", "/studies/%s/labels/%s" % (ct1, lab), body=b"")
                ok(st == 200, "PUT label %s on CT 1: HTTP %d" % (lab, st))
            reanalyse(o, ct1)
            got = settled_labels(o, ct1, lambda l: PREFIX + "stale" not in l)
            ok(got == expected[ct1] | {"reviewed", "other-plugin_x"},
               "after re-analysis CT 1 has ours and the user's/other plugin's: %s" % sorted(got))

            # A failed analysis drops ours (a label of ours set by hand on the bad study).
            o.request("PUT", "/studies/%s/labels/%s" % (bad, PREFIX + "alpha"), body=b"")
            o.request("PUT", "/studies/%s/labels/keep-me" % bad, body=b"")
            reanalyse(o, bad)
            got = settled_labels(o, bad, lambda l: not ours(l))
            ok(got == {"keep-me"}, "failed re-analysis: ours removed, keep-me kept: %s" % sorted(got))

            # A deleted study: gone from /tools/find.
            st, _, _ = o.request("DELETE", "/studies/" + ct2)
            ok(st == 200, "DELETE CT 2")
            for label in sorted(expected[ct2]):
                ok(ct2 not in find_tagged(o, label), "deleted CT 2 not found by %s" % label)

        # A new label set (new names, one label per study): only ours change.
        ls2 = label_set("2", "alpha-v2", 1)
        with open(ls_path, "w") as f:
            json.dump(ls2, f)
        o = Orthanc(plugin, model, workdir=workdir, unimed={"LabelSets": [ls_path]})
        with orthanc_session(o, ok, 60):
            for name, sid in (("MR (C-STORE)", mr_id), ("CT 1", ct1)):
                before = labels_of(o, sid)
                st, r = reanalyse(o, sid)
                want = expected_labels(r, ls2)
                got = settled_labels(o, sid, lambda l: ours(l) == want)
                ok(len(want) == 1 and got == want | (before - ours(before)),
                   "%s with the new label set: ours %s, others unchanged %s"
                   % (name, sorted(ours(got)), sorted(got - ours(got))))
            ok(find_tagged(o, PREFIX + "alpha") == set(),
               "no study keeps the old label %salpha" % PREFIX)
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
