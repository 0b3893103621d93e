#!/usr/bin/python3
"""Golden token ids for texts: UniMed's text cleaning with Python's real
html.unescape, then HuggingFace's BERT tokenizer (pure-JS tokenizers.js via
hf_tokenize.mjs).

    /usr/bin/python3 hf_reference.py --vocab vocab.txt --context 256 \
        --in texts.txt [--in more.jsonl ...] --out ids.jsonl

Inputs: a .txt file has one text per line (the line end is not part of the
text); a .jsonl file has one JSON string or {"text": ...} object per line.
Output: one {"text": original_text, "clean": cleaned_text, "ids": [...]}
line per input text, in order. "ids" includes [CLS] and [SEP] and is at most
--context long (no padding).

Cleaning (UniMed / open_clip HFTokenizer with clean="whitespace", minus
ftfy.fix_text which is not reproduced): html.unescape(html.unescape(text)),
then re.sub(r"\\s+", " ", text).strip().

Exit code 77 (skip) when node or the npm package is not available.
"""
import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP = 77


def unimed_clean(text):
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


def read_texts(path):
    texts = []
    with open(path, encoding='utf-8', newline='') as f:
        data = f.read()
    lines = data.split('\n')
    if lines and lines[-1] == '':
        lines.pop()
    jsonl = path.endswith('.jsonl') or path.endswith('.json')
    for line in lines:
        if jsonl:
            if not line.strip():
                continue
            v = json.loads(line)
            texts.append(v if isinstance(v, str) else v['text'])
        else:
            texts.append(line[:-1] if line.endswith('\r') else line)
    return texts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--vocab', required=True)
    ap.add_argument('--context', type=int, required=True)
    ap.add_argument('--in', dest='inputs', action='append', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--node', default=os.environ.get('NODE', 'node'))
    args = ap.parse_args()

    # A stale output must not outlive a skipped run.
    if os.path.exists(args.out):
        os.remove(args.out)
    for p in args.inputs:
        if not os.path.exists(p):
            print('SKIP: input %s does not exist' % p)
            return SKIP
    node = shutil.which(args.node)
    if not node:
        print('SKIP: node not found (needed for the HuggingFace reference tokenizer)')
        return SKIP
    pkg = os.path.join(HERE, 'node_modules', '@huggingface', 'tokenizers', 'package.json')
    if not os.path.exists(pkg):
        print('SKIP: %s missing; run "npm ci --ignore-scripts" in %s' % (pkg, HERE))
        return SKIP

    texts = []
    for p in args.inputs:
        texts.extend(read_texts(p))
    cleaned = [unimed_clean(t) for t in texts]
    payload = ''.join(json.dumps(c, ensure_ascii=True) + '\n' for c in cleaned)
    proc = subprocess.run([node, os.path.join(HERE, 'hf_tokenize.mjs'), args.vocab, str(args.context)],
                          input=payload.encode('utf-8'), stdout=subprocess.PIPE, cwd=HERE)
    if proc.returncode != 0:
        print('hf_tokenize.mjs failed with exit code %d' % proc.returncode, file=sys.stderr)
        return 1
    results = [json.loads(l) for l in proc.stdout.decode('utf-8').splitlines() if l.strip()]
    if len(results) != len(texts):
        print('got %d results for %d texts' % (len(results), len(texts)), file=sys.stderr)
        return 1
    d = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(d, exist_ok=True)
    tmp = args.out + '.tmp'
    with open(tmp, 'w', encoding='utf-8', newline='\n') as f:
        for t, c, r in zip(texts, cleaned, results):
            assert r['text'] == c
            f.write(json.dumps({'text': t, 'clean': c, 'ids': r['ids']}, ensure_ascii=True) + '\n')
    os.replace(tmp, args.out)
    print('wrote %d texts to %s' % (len(texts), args.out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
