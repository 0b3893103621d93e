#!/usr/bin/python3
"""Expected um_text_clean() results, computed with Python's own html.unescape
(never copied from the C output).

    /usr/bin/python3 clean_expected.py clean_cases.jsonl OUT.jsonl

Each input line is {"text": ...} or {"hex": "..."} (raw bytes, possibly
invalid UTF-8, decoded with errors="replace" as the C code documents). Each
output line is {"hex": input bytes as hex, "clean": expected cleaned text}.
"""
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_reference import unimed_clean  # noqa: E402


def main():
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    n = 0
    with open(src, encoding='utf-8') as f, open(dst, 'w', encoding='utf-8') as out:
        for line in f:
            if not line.strip():
                continue
            case = json.loads(line)
            raw = bytes.fromhex(case['hex']) if 'hex' in case else case['text'].encode('utf-8')
            # The C API takes NUL-terminated strings: the text ends at a NUL.
            raw = raw.split(b'\0', 1)[0]
            expected = unimed_clean(raw.decode('utf-8', errors='replace'))
            out.write(json.dumps({'hex': raw.hex(), 'clean': expected}, ensure_ascii=True) + '\n')
            n += 1
    print('wrote %d cleaning cases to %s' % (n, dst))


if __name__ == '__main__':
    main()
