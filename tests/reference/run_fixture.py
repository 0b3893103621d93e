#!/usr/bin/python3
"""make_model.py followed by golden.py in one process (used by the ctest fixtures).

  run_fixture.py --config small|full --vocab VOCAB_TXT --texts TEXTS.jsonl --out DIR
                 [--seed N] [--images N] [--dtype f32|f16|bf16]

Writes the model to DIR and the golden outputs to DIR/golden.
"""

import argparse
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

import golden  # noqa: E402
import make_model  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=sorted(make_model.PRESETS), required=True)
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--dtype", default="f32")
    a = ap.parse_args(argv)
    for path in (a.vocab, a.texts):
        if not os.path.isfile(path):
            print("run_fixture: error: %s does not exist (is its fixture test registered?)" % path,
                  file=sys.stderr)
            return 1
    rc = make_model.main(["--config", a.config, "--seed", str(a.seed), "--vocab", a.vocab,
                          "--out", a.out, "--dtype", a.dtype])
    if rc:
        return rc
    return golden.main(["--model", a.out, "--texts", a.texts, "--out", os.path.join(a.out, "golden"),
                        "--images", str(a.images), "--seed", str(a.seed)])


if __name__ == "__main__":
    sys.exit(main())
