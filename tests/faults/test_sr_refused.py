#!/usr/bin/python3
"""faults_sr_refused: an SR refused by a Lua ReceivedInstanceFilter (Orthanc
answers 200 with "Status": "FilteredOut") leaves the study failed with that
reason, never done with the ID of an SR that does not exist."""

import os
import sys

from faultlib import Check, Orthanc, env_paths, make_study, orthanc_session, skip_if_sanitizer, sr_instances, study_result, upload

LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
  return dicom.Modality ~= 'SR'
end
"""


def main():
    skip_if_sanitizer()
    plugin, model = env_paths()
    ok = Check("faults_sr_refused")
    o = Orthanc(plugin, model, extra={"StableAge": 1})
    lua = os.path.join(o.workdir, "refuse_sr.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    o.write_config(model, {}, {"StableAge": 1, "LuaScripts": [lua]})
    with orthanc_session(o, ok):
        sid = upload(o, make_study("CT", n_instances=2, seed=6)[1])
        st, a = study_result(o, sid)
        ok(st == 200 and a["state"] == "failed", "state %r (failed expected)" % a.get("state"))
        ok("FilteredOut" in a.get("error", ""), "reason: %r" % a.get("error"))
        ok(not a.get("sr"), "no SR ID recorded")
        ok(sr_instances(o, sid) == [], "no SR in the study")
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
