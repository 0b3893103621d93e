#!/usr/bin/python3
"""The Orthanc half of scripts/demo.sh.

  demo_report.py info < `unimed info` JSON          one line about the model
  demo_report.py card-label-sets MODEL_DIR          the label sets its model-card.json lists
  demo_report.py card-summary MODEL_DIR             one line: the questions the model answers
  demo_report.py serve --plugin SO --model DIR --samples DIR [--label-set FILE]...
                 [--workdir DIR] [--http-port N] [--dicom-port N] [--no-wait]
                 [--timeout S] [--warning TEXT] [--answers TEXT] [--modalities LIST]

serve: starts Debian's Orthanc with the plugin (orthanc/run.py's Orthanc),
sends every study folder of --samples with storescu (C-STORE), polls
GET /unimed/studies/{id} until each is analysed, prints the findings and
where to see them, then waits for Ctrl-C (or exits at once with --no-wait)
and stops Orthanc cleanly. Exit 0 when every study was analysed with
findings, 1 otherwise. With --modalities (the modalities the model card's
label sets cover), a study of another modality is expected to get no
findings: its row says that the model does not answer it.
"""

import argparse
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "orthanc"))


def info():
    for line in sys.stdin:
        r = json.loads(line)
        v = r.get("vision", {})
        print(f"model: {r.get('name')} {r.get('version', '')} (hash {r.get('hash')}), "
              f"image {v.get('image_size')} px, embedding {r.get('embed_dim')}, BLAS kernel {r.get('blas_core')}")
    return 0


# ---- model card (samples/demo-model/README.md describes model-card.json) ------

def read_card(model_dir):
    path = os.path.join(model_dir, "model-card.json")
    with open(path) as f:
        card = json.load(f)
    sets = card.get("label_sets") or []
    if not sets or not all(isinstance(e, dict) and e.get("file") for e in sets):
        raise SystemExit(f"demo: {path}: \"label_sets\" must list objects with a \"file\"")
    return card


def card_label_sets(model_dir):
    for e in read_card(model_dir)["label_sets"]:
        print(os.path.join(os.path.abspath(model_dir), e["file"]))
    return 0


def card_summary(model_dir):
    card = read_card(model_dir)
    qs = [f"{e.get('question', e.get('name', e['file']))} ({', '.join(e.get('modalities') or ['any'])})"
          for e in card["label_sets"]]
    mods = sorted({m for e in card["label_sets"] for m in (e.get("modalities") or [])})
    print("The model answers only (its model card): " + "; ".join(qs)
          + ". Studies of other modalities get no answer.")
    print(",".join(mods))
    return 0


# ---- ports -------------------------------------------------------------------

def port_free(port):
    """True if nothing listens on port (Orthanc 1.10 binds every address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def choose_port(wanted, what, taken):
    from run import free_port
    if wanted and port_free(wanted) and wanted not in taken:
        return wanted, None
    p = free_port()
    while p in taken:
        p = free_port()
    note = None
    if wanted:
        note = f"{what} port {wanted} is in use (another Orthanc?): using {p} instead"
    return p, note


# ---- sample studies ----------------------------------------------------------

def read_samples(root):
    """[(name, [paths], study_uid, modality, description)], one per folder."""
    import pydicom
    out = []
    for d in sorted(glob.glob(os.path.join(root, "*"))):
        files = sorted(glob.glob(os.path.join(d, "*.dcm")))
        if not files:
            continue
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        out.append({"name": os.path.basename(d), "files": files, "study_uid": str(ds.StudyInstanceUID),
                    "modality": str(ds.get("Modality", "")),
                    "sop": getattr(ds.SOPClassUID, "name", str(ds.SOPClassUID)),
                    "size": f"{ds.get('Rows', '?')}x{ds.get('Columns', '?')}",
                    "frames": sum(int(pydicom.dcmread(f, stop_before_pixels=True).get("NumberOfFrames", 1) or 1)
                                  for f in files)})
    return out


# storescu proposes uncompressed transfer syntaxes unless told; a compressed
# file needs its own syntax proposed (it cannot be decompressed on the way).
TS_OPTION = {
    "1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx", "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt", "1.2.840.10008.1.2.4.81": "-xu", "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw", "1.2.840.10008.1.2.5": "-xr", "1.2.840.10008.1.2.1.99": "-xd",
}


def storescu(o, files):
    """C-STORE files (one association per transfer-syntax group); (rc, output)."""
    import pydicom
    groups = {}
    for f in files:
        ts = str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        groups.setdefault(TS_OPTION.get(ts, "-x="), []).append(f)
    out = []
    for opt, group in groups.items():
        # -R: propose only the SOP classes of these files (storescu's default
        # list lacks e.g. VL Whole Slide Microscopy).
        cmd = ["storescu", "-R", opt, "-aet", "STORESCU", "-aec", o.aet, "127.0.0.1", str(o.dicom_port)] + group
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        out.append((r.stdout + r.stderr).strip())
        if r.returncode != 0:
            return r.returncode, "\n".join(out)
    return 0, "\n".join(out)


# ---- the table ---------------------------------------------------------------

def top_findings(result, per_set=2):
    """{label_set: [(label, p)...]}, best first, best series per label, from
    REST's flat scores (the same numbers as in the SR)."""
    best = {}
    for f in result.get("scores") or []:
        key = (f.get("label_set", ""), f.get("label", ""))
        if f.get("probability") is not None and f["probability"] > best.get(key, -1):
            best[key] = f["probability"]
    sets = {}
    for (ls, label), p in best.items():
        sets.setdefault(ls, []).append((label, p))
    return {ls: sorted(v, key=lambda t: -t[1])[:per_set] for ls, v in sorted(sets.items())}


def modalities(result):
    return sorted({s.get("modality", "") for s in result.get("scores") or []} - {""})


def print_table(rows, answered_modalities=None):
    w = max([len(r["name"]) for r in rows] + [5])
    print(f"\n{'study':{w}}  {'modality':8}  {'images':>6}  findings (label set: top labels, probability)")
    print(f"{'-' * w}  {'-' * 8}  {'-' * 6}  {'-' * 60}")
    for r in rows:
        res = r.get("result") or {}
        mods = modalities(res) or [r["modality"]]
        lines = []
        if res.get("state") != "done":
            lines.append(f"{res.get('state', 'no answer').upper()}: {res.get('error', r.get('error', ''))}")
        else:
            for ls, top in top_findings(res).items():
                lines.append(f"{ls}: " + ", ".join(f"{label} {p:.2f}" for label, p in top))
            if not lines and answered_modalities is not None and not set(mods) & answered_modalities:
                lines.append("- (not answered: no question of this model is about %s)" % "/".join(mods))
            elif not lines:
                lines.append("(no findings: no label set applies)")
        first = f"{r['name']:{w}}  {'/'.join(mods):8}  {r['frames']:>6}  "
        print(first + lines[0])
        for line in lines[1:]:
            print(" " * len(first) + line)


def where(o, rows, http_note):
    u = f"http://localhost:{o.http_port}"
    done = [r for r in rows if (r.get("result") or {}).get("state") == "done"]
    ex = done[0] if done else (rows[0] if rows else None)
    sid = ex["id"] if ex else "STUDY_ID"
    sr = (((ex or {}).get("result") or {}).get("sr") or {}).get("instance_id") or "SR_INSTANCE_ID"
    print(f"""
== where to see it
Orthanc Explorer    {u}/app/explorer.html   (this machine only; no password)
  a study's page    {u}/app/explorer.html#study?uuid={sid}
                    ("UniMed findings" panel under the series list: model and
                    label sets, the table, the modality check, the report, a
                    Re-analyse button)
  its report        {u}/unimed/studies/{sid}/report.html
  its SR            {u}/app/explorer.html#instance?uuid={sr}
                    (series 9901 "SR" in each study: a DICOM TID 1500 report)
Orthanc IDs of the studies:
{chr(10).join('  %-24s %s' % (r['name'], r['id']) for r in rows if r.get('id'))}

REST (docs/PLUGIN.md)
  curl -s {u}/unimed/status
  curl -s {u}/unimed/studies/{sid}
  curl -s "{u}/unimed/studies?state=done&limit=20"
  curl -s "{u}/unimed/findings?label=pneumonia&min_probability=0.5"
  curl -s "{u}/unimed/search?text=chest%20x-ray&limit=5"
  curl -s -X POST -H "Content-Type: application/dicom" --data-binary @FILE.dcm {u}/unimed/classify
  curl -s {u}/instances/{sr}/file -o report.dcm && dsrdump report.dcm
Send your own       storescu -aet STORESCU -aec {o.aet} localhost {o.dicom_port} FILE.dcm...
                    (or drag files onto {u}/app/explorer.html#upload)
Orthanc's log       {o.log_path}""")
    if http_note:
        print(f"\nNote: {http_note}")


# ---- serve -------------------------------------------------------------------

def serve(a):
    from run import Orthanc
    samples = read_samples(a.samples)
    if not samples:
        print(f"demo: no sample studies under {a.samples}", file=sys.stderr)
        return 1
    notes = []
    http_port, n1 = choose_port(a.http_port, "HTTP", set())
    dicom_port, n2 = choose_port(a.dicom_port, "DICOM", {http_port})
    notes += [n for n in (n1, n2) if n]
    workdir = os.path.abspath(a.workdir)
    if os.path.isdir(workdir):
        subprocess.run(["rm", "-rf", workdir], check=True)
    os.makedirs(workdir)
    unimed = {"Workers": 1, "Threads": max(1, min(4, os.cpu_count() or 1))}
    if a.label_set:
        unimed["LabelSets"] = [os.path.abspath(p) for p in a.label_set]
    o = Orthanc(a.plugin, a.model, workdir=workdir, unimed=unimed,
                extra={"Name": "UniMed demo", "DicomAet": "UNIMED"},
                http_port=http_port, dicom_port=dicom_port)
    o.aet = "UNIMED"

    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C stops Orthanc cleanly, even when started from a shell that
    # ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ok = True
    try:
        print(f"\n== Orthanc (Debian's /usr/sbin/Orthanc + {os.path.relpath(a.plugin, REPO)})")
        for n in notes:
            print("NOTE: " + n)
        o.start()
        st, status = o.get("/unimed/status")
        if st != 200 or not status.get("enabled"):
            print(f"demo: the plugin is not running: {status}\n{o.log_tail(20)}", file=sys.stderr)
            return 1
        print(f"running at http://localhost:{o.http_port} (DICOM {o.aet}@localhost:{o.dicom_port}), "
              f"pid {o.proc.pid}; plugin {status.get('version')}, model {status['model'].get('name')} "
              f"(hash {status['model'].get('hash')}), label sets "
              + ", ".join(ls["name"] for ls in status.get("label_sets", [])))

        print(f"\n== sending {len(samples)} studies over DICOM (storescu -aet STORESCU -aec {o.aet} "
              f"localhost {o.dicom_port} FILES)")
        for s in samples:
            rc, out = storescu(o, s["files"])
            if rc != 0:
                s["error"] = f"storescu failed ({rc}): " + " / ".join(out.splitlines()[-2:])
                ok = False
            print(f"  {s['name']:24} {s['modality']:3} {len(s['files']):2} file(s), {s['frames']:3} image(s) "
                  f"{s['size']:>9}  {s['sop']}" + ("" if rc == 0 else "\n    FAILED: " + out[-400:]))
        for s in samples:
            if "error" in s:
                continue
            st, ans = o.post("/tools/lookup", s["study_uid"])
            ids = [x["ID"] for x in (ans or []) if isinstance(x, dict) and x.get("Type") == "Study"]
            if ids:
                s["id"] = ids[0]
            else:
                s["error"] = "the study is not in Orthanc"
                ok = False

        print("\n== waiting for the plugin (Orthanc marks a study stable 2 s after its last "
              "instance; then the plugin analyses it and stores an SR)")
        pending = [s for s in samples if "id" in s]
        t0 = time.time()
        last = ""
        while pending and time.time() - t0 < a.timeout:
            for s in list(pending):
                st, ans = o.get("/unimed/studies/" + s["id"])
                if st == 200:
                    s["result"] = ans
                    pending.remove(s)
            line = f"  {len(samples) - len(pending)}/{len(samples)} analysed ({time.time() - t0:.0f} s)"
            if line != last and sys.stdout.isatty():
                print("\r" + line, end="", flush=True)
            last = line
            if pending:
                time.sleep(0.5)
        print(("\r" if sys.stdout.isatty() else "") + last.strip()
              + ("" if not pending else f"; timed out waiting for {', '.join(s['name'] for s in pending)}"))
        for s in pending:
            s["error"] = "not analysed within %d s" % a.timeout

        print("\n== findings (GET /unimed/studies/{id}; the same as in each study's SR)")
        if a.answers:
            print(a.answers)
        if a.warning:
            print("NOTE: " + a.warning)
        answered = set(a.modalities.split(",")) - {""} if a.modalities is not None else None
        print_table(samples, answered)
        for s in samples:
            res = s.get("result") or {}
            unanswered = answered is not None and not set(modalities(res) or [s["modality"]]) & answered
            if res.get("state") != "done" or not (top_findings(res) or unanswered):
                ok = False
        where(o, samples, "; ".join(notes))
        if a.no_wait:
            print("\ndemo: done (--no-wait, or no terminal): stopping Orthanc.")
        else:
            print(f"\ndemo: Orthanc keeps running at http://localhost:{o.http_port} — press Ctrl-C to stop it.")
            while o.alive():
                time.sleep(0.5)
            print("demo: Orthanc exited on its own; see " + o.log_path)
            ok = False
    except KeyboardInterrupt:
        print("\ndemo: stopping Orthanc…")
    finally:
        rc = o.stop()
        if rc not in (None, 0):
            print(f"demo: Orthanc exited with {rc}; see {o.log_path}", file=sys.stderr)
    shown = os.path.relpath(workdir, REPO) if workdir.startswith(REPO + os.sep) else workdir
    print(f"demo: Orthanc stopped (its storage stays in {shown} until the next run).")
    return 0 if ok else 1


def main(argv):
    if len(argv) > 1 and argv[1] == "info":
        return info()
    if len(argv) == 3 and argv[1] == "card-label-sets":
        return card_label_sets(argv[2])
    if len(argv) == 3 and argv[1] == "card-summary":
        return card_summary(argv[2])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--plugin", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--samples", required=True, help="folder of study folders (*.dcm)")
    p.add_argument("--label-set", action="append", default=[])
    p.add_argument("--workdir", default=os.path.join(REPO, "build", "demo", "orthanc"))
    p.add_argument("--http-port", type=int, default=8042, help="0: any free port")
    p.add_argument("--dicom-port", type=int, default=4242, help="0: any free port")
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--warning", default="")
    p.add_argument("--answers", default="", help="one line: the questions the model answers")
    p.add_argument("--modalities", help="comma-separated modalities the model answers; other "
                   "studies are expected to have no findings")
    a = ap.parse_args(argv[1:])
    return serve(a)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
