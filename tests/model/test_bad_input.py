#!/usr/bin/python3
"""Bad input to the model core through the `unimed` command.

usage: test_bad_input.py UNIMED_BINARY SMALL_MODEL_DIR

Each case breaks a copy of a valid model directory (or gives a bad argument)
and checks: the exit status (1 bad input, 2 bad usage), exactly the expected
words in the one-line error (the file and, where one is at fault, the tensor
or field), and no sanitizer report or crash."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

UNIMED, MODEL = sys.argv[1], sys.argv[2]
failures = []
passed = 0


def run(args, stdin=None):
    p = subprocess.run([UNIMED] + args, capture_output=True, text=True, input=stdin, timeout=120)
    return p.returncode, p.stdout, p.stderr


def expect(name, args, code, *words):
    global passed
    rc, out, err = run(args)
    problems = []
    if rc != code:
        problems.append(f"exit {rc}, expected {code}")
    for w in words:
        if w not in err:
            problems.append(f"stderr lacks {w!r}")
    if "Sanitizer" in err or "runtime error" in err:
        problems.append("sanitizer report")
    if problems:
        failures.append(name)
        print(f"FAIL {name}: {'; '.join(problems)}\n  stderr: {err.strip()[:400]}")
    else:
        passed += 1
        print(f"ok   {name}: {err.strip().splitlines()[0] if err.strip() else '(no message)'}")


def read_st(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(path, header, data):
    h = json.dumps(header).encode()
    h += b" " * ((8 - (len(h) + 8) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def broken_copy(tmp, name):
    d = os.path.join(tmp, name)
    shutil.copytree(MODEL, d)
    return d


def main():
    tmp = tempfile.mkdtemp(prefix="unimed-bad-")
    try:
        st_name = "model.safetensors"
        header, data = read_st(os.path.join(MODEL, st_name))
        tensors = sorted(k for k in header if k != "__metadata__")

        d = broken_copy(tmp, "truncated")
        p = os.path.join(d, st_name)
        with open(p, "rb") as f:
            raw = f.read()
        with open(p, "wb") as f:
            f.write(raw[: len(raw) // 2])
        expect("truncated safetensors", ["info", "--model", d], 1, p)

        d = broken_copy(tmp, "tiny")
        p = os.path.join(d, st_name)
        with open(p, "wb") as f:
            f.write(b"\x05\x00")
        expect("safetensors shorter than its length field", ["info", "--model", d], 1, p, "truncated")

        d = broken_copy(tmp, "badjson")
        p = os.path.join(d, st_name)
        with open(p, "wb") as f:
            f.write(struct.pack("<Q", 16) + b"{not json at all")
        expect("header is not JSON", ["info", "--model", d], 1, p, "JSON")

        victim = "visual.ln_post.bias"
        d = broken_copy(tmp, "lying_offsets")
        h = json.loads(json.dumps(header))
        h[victim]["data_offsets"][1] = len(data) + 4096
        write_st(os.path.join(d, st_name), h, data)
        expect("offsets beyond the file", ["info", "--model", d], 1, st_name, victim)

        d = broken_copy(tmp, "lying_size")
        h = json.loads(json.dumps(header))
        b0, b1 = h[victim]["data_offsets"]
        h[victim]["shape"] = [h[victim]["shape"][0] * 2]
        write_st(os.path.join(d, st_name), h, data)
        expect("size disagrees with shape", ["info", "--model", d], 1, st_name, victim)

        d = broken_copy(tmp, "unknown_dtype")
        h = json.loads(json.dumps(header))
        h[victim]["dtype"] = "Q4_K"
        write_st(os.path.join(d, st_name), h, data)
        expect("unknown dtype", ["info", "--model", d], 1, st_name, victim, "Q4_K")

        d = broken_copy(tmp, "int_dtype")
        h = json.loads(json.dumps(header))
        h[victim]["dtype"] = "I32"
        write_st(os.path.join(d, st_name), h, data)
        expect("integer dtype for a weight", ["info", "--model", d], 1, st_name, victim, "I32")

        d = broken_copy(tmp, "missing_tensor")
        h = json.loads(json.dumps(header))
        del h[victim]
        write_st(os.path.join(d, st_name), h, data)
        expect("missing tensor", ["info", "--model", d], 1, st_name, victim, "missing")

        d = broken_copy(tmp, "shape_vs_config")
        cfg_path = os.path.join(d, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["text"]["intermediate_size"] += 8
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        expect("shape disagrees with config", ["info", "--model", d], 1, st_name,
               "text_encoder.transformer.encoder.layer.0.intermediate.dense.weight", "config.json")

        d = broken_copy(tmp, "config_missing_field")
        cfg_path = os.path.join(d, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        del cfg["vision"]["patch_size"]
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        expect("config field missing", ["info", "--model", d], 1, "config.json", "vision.patch_size")

        d = broken_copy(tmp, "config_bad_value")
        cfg_path = os.path.join(d, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["vision"]["activation"] = "relu"
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        expect("config bad activation", ["info", "--model", d], 1, "config.json", "vision.activation")

        d = broken_copy(tmp, "config_not_json")
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write("{\"embed_dim\": 32,")
        expect("config not JSON", ["info", "--model", d], 1, "config.json")

        d = broken_copy(tmp, "no_vocab")
        os.remove(os.path.join(d, "vocab.txt"))
        expect("missing vocab", ["info", "--model", d], 1, "vocab.txt")

        expect("missing model directory", ["info", "--model", os.path.join(tmp, "nope")], 1,
               "nope", "config.json")

        expect("empty text", ["embed-text", "--model", MODEL, ""], 1, "empty")
        expect("whitespace-only text", ["embed-text", "--model", MODEL, "  \t "], 1, "empty")

        short = os.path.join(tmp, "short.f32")
        with open(short, "wb") as f:
            f.write(b"\0" * 100)
        expect("tensor file of the wrong size", ["embed-image", "--model", MODEL, "--tensor", short],
               1, short, "100 bytes")
        expect("tensor file missing", ["embed-image", "--model", MODEL, "--tensor",
                                       os.path.join(tmp, "absent.f32")], 1, "absent.f32")
        with open(os.path.join(MODEL, "config.json")) as f:
            size = json.load(f)["vision"]["image_size"]
        nan = os.path.join(tmp, "nan.f32")
        with open(nan, "wb") as f:
            f.write(struct.pack("<f", float("nan")) * (3 * size * size))
        expect("tensor with NaN", ["embed-image", "--model", MODEL, "--tensor", nan], 1, nan, "finite")

        expect("bad class spec", ["zero-shot", "--model", MODEL, "--tensor", short, "--class", "nolabel"],
               2, "NAME=PROMPT")
        expect("no command", [], 2, "usage")
        expect("unknown command", ["frobnicate"], 2, "unknown command")
        expect("missing --model", ["info"], 2, "--model")
        expect("unknown option", ["info", "--model", MODEL, "--colour"], 2, "--colour")
        expect("bad --runs", ["bench", "--model", MODEL, "--runs", "zero"], 2, "--runs")
        for cmd in ["info", "tokenize", "embed-text", "embed-image", "zero-shot", "bench"]:
            expect(f"{cmd} --help", [cmd, "--help"], 0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"bad input: {passed} cases ok, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
