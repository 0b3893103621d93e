#!/usr/bin/python3
"""Formats the `unimed` JSON lines of scripts/demo.sh as short tables.

usage: demo_report.py info|inspect|findings < JSON lines"""
import json
import sys

kind = sys.argv[1]
for line in sys.stdin:
    r = json.loads(line)
    if kind == "info":
        print(f"model: {r['name']} {r['version']} (hash {r['hash']}), "
              f"image {r['vision']['image_size']} px, embed {r['embed_dim']}, BLAS kernel {r['blas_core']}")
    elif kind == "inspect":
        ts = r.get("transfer_syntax", {})
        print(f"{r['file'].split('/')[-1]:28} {r.get('modality', ''):4} {r.get('rows')}x{r.get('columns')} "
              f"frames {r.get('frames')}  {r.get('photometric', ''):14} {ts.get('name', '') if isinstance(ts, dict) else ts}")
    elif kind == "findings":
        for s in r["series"]:
            print(f"study …{r['study'][-20:]}  series …{s['series'][-16:]}  {s['modality']}"
                  f"  frames {len(s.get('frames_used', []))}")
            if "error" in s:
                print(f"   error: {s['error']}")
            for ls in s.get("label_sets", []):
                top = sorted(ls["findings"], key=lambda f: -f["probability"])[:3]
                print(f"   {ls['name']:26} " + ", ".join(f"{f['label']} {f['probability']:.2f}" for f in top))
        if "sr" in r:
            print(f"   SR {r['sr'].get('file', '')} ({r['sr']['sop_instance_uid']})")
