#!/usr/bin/python3
"""Where one thread's CPU time goes in the image tower, per image.

    bench/perf_ops.py FORWARD_LOOP MODEL_DIR PRECISION BATCH RUNS

Runs bench/forward_loop.c (built with -no-pie, so that perf's addresses are
the binary's) under `perf record -F 4000` on one thread and sums the samples
by what the functions do. The BF16 and INT8 GEMMs have kernels of the same
names (kernel_1 .. kernel_14, static in gemm_bf16.c and gemm_i8.c): they are
told apart by address, gemm_i8.o's functions lying after gemm_bf16.o's last
one in the link. Load-time functions and the OS kernel's samples are shown
but left out of the total. Sampling adds some 7 % to every figure.
"""
import collections
import os
import subprocess
import sys

FREQ = 4000

def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    binary, model, precision, batch, runs = sys.argv[1:]
    data = "/tmp/perf_ops.%d.data" % os.getpid()
    subprocess.run(["perf", "record", "-q", "-o", data, "-F", str(FREQ), binary, model, "1",
                    precision, batch, runs], check=True)
    images = (int(runs) + 1) * int(batch)  # the warm-up included
    syms = []
    for line in subprocess.run(["nm", "-n", binary], capture_output=True, text=True).stdout.split("\n"):
        p = line.split()
        if len(p) == 3 and p[1] in "tTwW":
            syms.append((int(p[0], 16), p[2]))
    i8_lo = next(a for a, s in syms if s == "um_linear_bf16_gelu") + 1
    i8_hi = next(a for a, s in syms if s == "um_linear_i8_gelu") + 0x1000
    out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True,
                         text=True, check=True).stdout
    os.unlink(data)
    cat = collections.Counter()
    for line in out.split("\n"):
        p = line.split()
        if len(p) < 2:
            continue
        ip, s = int(p[0], 16), p[1]
        if s.startswith("kernel_") or s == "kernel256":
            k = "INT8 GEMM kernels" if i8_lo <= ip < i8_hi else "BF16 GEMM kernels"
        elif s == "pack_a_512" or (s == "pack_a_c" and i8_lo <= ip < i8_hi):
            k = "quantizing INT8 GEMM inputs"
        elif s in ("attn_head_avx512", "attn_head_avx2", "attn_head_c", "um_attn_head_bf16", "pv_block"):
            k = "attention"
        elif s.startswith("layernorm"):
            k = "LayerNorm passes"
        elif s in ("um_i8_pack", "um_bf16_pack", "__nearbyintf_sse41", "__nearbyintf"):
            k = "(load)"
        elif ip >= 0xffff000000000000:
            k = "(OS kernel: load page faults, scheduling)"
        else:
            k = "everything else"
        cat[k] += 1
    total = 0
    for k, v in cat.most_common():
        ms = v / FREQ * 1e3 / images
        if not k.startswith("("):
            total += ms
        print("%-45s %7.2f ms/image" % (k, ms))
    print("%-45s %7.2f ms/image" % ("total (without the parenthesised)", total))

if __name__ == "__main__":
    main()
