#!/usr/bin/python3
"""faults_model_changed: model.safetensors rewritten in place (same size,
other weights) and then truncated under a running Orthanc: POST classify
keeps answering the same probabilities under the same model hash (the
weights loaded are the bytes that were hashed), and Orthanc never dies
(a truncated file mapping used to end it with SIGBUS). A new model is used
after a restart."""

import json
import os
import shutil
import struct
import sys

import numpy as np

from faultlib import Check, Orthanc, env_paths, make_study, orthanc_session, skip_if_sanitizer


def classify(o, data):
    st, r = o.post("/unimed/classify", data, headers={"Content-Type": "application/dicom"})
    return st, r


def probabilities(r):
    return json.dumps(r["scores"], sort_keys=True)


def main():
    skip_if_sanitizer()
    plugin, src_model = env_paths()
    ok = Check("faults_model_changed")
    o = Orthanc(plugin, None)
    model = os.path.join(o.workdir, "model")
    shutil.copytree(src_model, model)
    o.write_config(model, {}, {})
    weights = os.path.join(model, "model.safetensors")
    _, files = make_study("CT", n_instances=1, seed=50)
    with orthanc_session(o, ok, 60):
        st, r1 = classify(o, files[0])
        ok(st == 200, "classify: HTTP %s" % st)
        h1 = o.get("/unimed/status")[1]["model"]["hash"]

        # In place: same inode, same size, other tensor bytes.
        with open(weights, "r+b") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            size = os.fstat(f.fileno()).st_size
            f.seek(8 + n)
            rng = np.random.default_rng(1)
            f.write(rng.standard_normal((size - 8 - n) // 4, dtype=np.float32).tobytes())
        st, r2 = classify(o, files[0])
        ok(st == 200 and probabilities(r2) == probabilities(r1),
           "after an in-place rewrite: same probabilities (HTTP %s)" % st)
        ok(o.get("/unimed/status")[1]["model"]["hash"] == h1, "same model hash")

        os.truncate(weights, 4096)
        st, r3 = classify(o, files[0])
        ok(st == 200 and probabilities(r3) == probabilities(r1),
           "after truncation: classify still answers the same (HTTP %s)" % st)
        ok(o.alive() and o.get("/system")[0] == 200, "Orthanc alive")

        # The upgrade procedure: a new model directory in place of the old one, then a restart.
        shutil.rmtree(model)
        shutil.copytree(src_model, model)
        with open(weights, "r+b") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            size = os.fstat(f.fileno()).st_size
            f.seek(8 + n)
            f.write(np.random.default_rng(2).standard_normal((size - 8 - n) // 4, dtype=np.float32).tobytes())
        o.stop()
        o.start()
        h2 = o.get("/unimed/status")[1]["model"]["hash"]
        st, r4 = classify(o, files[0])
        ok(h2 != h1 and st == 200 and probabilities(r4) != probabilities(r1),
           "after a restart the new model is used (hash %s -> %s)" % (h1, h2))
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
