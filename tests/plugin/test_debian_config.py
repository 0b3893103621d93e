#!/usr/bin/python3
"""plugin_debian_config: the installation of docs/PLUGIN.md on Debian's own
configuration: /etc/orthanc/*.json (Debian's files, with only the ports,
storage and plugin path changed) plus the shipped plugin/unimed.json copied
verbatim (only ModelDirectory set). Orthanc starts, the plugin is enabled
and analyses a study; metadata names are not declared (numbers are used)."""

import os
import re
import shutil
import sys

from common import REPO, Check, Orthanc, env_paths, make_study, sr_instances, study_result, upload, orthanc_session

DEBIAN = "/etc/orthanc"


def main():
    plugin, model = env_paths()
    if not os.path.isfile(os.path.join(DEBIAN, "orthanc.json")):
        print("SKIP: %s/orthanc.json not found" % DEBIAN)
        return 77
    ok = Check("plugin_debian_config")
    o = Orthanc(plugin, model)
    # Replace the generated configuration with Debian's files.
    shutil.rmtree(o.config_dir)
    os.makedirs(o.config_dir)
    storage = os.path.join(o.workdir, "storage")
    for name in os.listdir(DEBIAN):
        if not name.endswith(".json") or name in ("serve-folders.json", "worklists.json"):
            continue  # the other Debian plugins are not loaded here
        with open(os.path.join(DEBIAN, name)) as f:
            text = f.read()
        if name == "orthanc.json":
            subs = [(r'"StorageDirectory"\s*:\s*"[^"]*"', '"StorageDirectory" : "%s"' % storage),
                    (r'"IndexDirectory"\s*:\s*"[^"]*"', '"IndexDirectory" : "%s"' % storage),
                    (r'"HttpPort"\s*:\s*\d+', '"HttpPort" : %d' % o.http_port),
                    (r'"DicomPort"\s*:\s*\d+', '"DicomPort" : %d' % o.dicom_port),
                    (r'"/usr/share/orthanc/plugins/"', '"%s"' % plugin),
                    (r'"StableAge"\s*:\s*\d+', '"StableAge" : 2'),
                    (r'"RemoteAccessAllowed"\s*:\s*\w+', '"RemoteAccessAllowed" : false')]
            for pat, rep in subs:
                text, n = re.subn(pat, rep, text, count=1)
                if n != 1:
                    print("cannot patch %s in Debian's orthanc.json" % pat)
                    return 1
        with open(os.path.join(o.config_dir, name), "w") as f:
            f.write(text)
    with open(os.path.join(REPO, "plugin", "unimed.json")) as f:
        text = f.read()
    text, n = re.subn(r'"ModelDirectory"\s*:\s*"[^"]*"', '"ModelDirectory" : "%s"' % model, text)
    text = text.replace('// "CacheDirectory" : "/var/lib/orthanc/unimed"',
                        '"CacheDirectory" : "%s"' % os.path.join(o.workdir, "cache"))
    with open(os.path.join(o.config_dir, "unimed.json"), "w") as f:
        f.write(text)
    with orthanc_session(o, ok):
        st, s = o.get("/unimed/status")
        ok(st == 200 and s["enabled"], "plugin enabled with Debian's configuration + unimed.json")
        _, files = make_study("CR", 1, 1, seed=31)
        sid = upload(o, files)
        st, r = study_result(o, sid)
        ok(st == 200 and r["state"] == "done" and len(sr_instances(o, sid)) == 1, "a study is analysed with one SR")
        st, meta = o.get("/studies/%s/metadata" % sid)
        ok(st == 200 and "4600" in meta and "4601" in meta, "results in metadata 4600/4601: %s" % meta)
        st, att = o.get("/studies/%s/attachments" % sid)
        ok(st == 200 and "4602" in att, "embeddings in attachment 4602: %s" % att)
        o.stop()
        o.start()
        st, s = o.get("/unimed/search?text=chest")
        ok(st == 200 and [x for x in s["studies"] if x["study_id"] == sid], "index rebuilt after a restart")
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
