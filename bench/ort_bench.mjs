// Times the exported UniMed towers in ONNX Runtime (onnxruntime-node, CPU).
//
//   node bench/ort_bench.mjs --onnx DIR [--runs N] [--threads N] [--tokens N]
//
// DIR holds image.onnx, text.onnx and export.json (bench/export_onnx.py).
// Prints one JSON object like `unimed bench`: min/median/max milliseconds per
// image at batch 1 and 8, per prompt of --tokens ids, and per prompt when 32
// such prompts run as one [32, tokens] batch (ms_per_prompt_batch32), after
// one warm-up run each, plus the session settings and this process's peak RSS. cpu_ms_*: the
// process's CPU time per image / prompt (all its threads, spinning included).
//
//   node bench/ort_bench.mjs --onnx DIR --check PIXELS.f32
// instead prints the L2-normalised embedding of one raw float32 [3,S,S] image.
import fs from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import ort from 'onnxruntime-node';

function parseArgs(argv) {
  const o = { runs: 5, threads: 2, tokens: 16, onnx: null, check: null };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i], v = argv[i + 1];
    if (k === '--onnx') o.onnx = v;
    else if (k === '--runs') o.runs = parseInt(v, 10);
    else if (k === '--threads') o.threads = parseInt(v, 10);
    else if (k === '--tokens') o.tokens = parseInt(v, 10);
    else if (k === '--check') o.check = v;
    else throw new Error(`unknown argument ${k}`);
    i++;
  }
  if (!o.onnx) throw new Error('--onnx DIR is required');
  return o;
}

function stats(ms) {
  const s = [...ms].sort((a, b) => a - b);
  const r = (x) => Math.round(x * 1000) / 1000;
  return { min: r(s[0]), median: r(s[Math.floor(s.length / 2)]), max: r(s[s.length - 1]) };
}

const o = parseArgs(process.argv.slice(2));
const info = JSON.parse(fs.readFileSync(path.join(o.onnx, 'export.json'), 'utf8'));
const opts = {
  executionProviders: ['cpu'],
  intraOpNumThreads: o.threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
};
const S = info.image_size;
const per = 3 * S * S;

if (o.check) {
  const img = await ort.InferenceSession.create(path.join(o.onnx, 'image.onnx'), opts);
  const buf = fs.readFileSync(o.check);
  const px = new Float32Array(buf.buffer, buf.byteOffset, per);
  const out = await img.run({ pixels: new ort.Tensor('float32', Float32Array.from(px), [1, 3, S, S]) });
  const e = out.embedding.data;
  const n = Math.hypot(...e);
  console.log(JSON.stringify(Array.from(e, (x) => x / n)));
  process.exit(0);
}

const t0 = performance.now();
const img = await ort.InferenceSession.create(path.join(o.onnx, 'image.onnx'), opts);
const txt = await ort.InferenceSession.create(path.join(o.onnx, 'text.onnx'), opts);
const loadMs = performance.now() - t0;

// Same pseudo-random pixels as `unimed bench` (an LCG over [-2, 2)).
const pixels = new Float32Array(8 * per);
let s = 12345;
for (let i = 0; i < pixels.length; i++) {
  s = (Math.imul(s, 1103515245) + 12345) >>> 0;
  pixels[i] = ((s >>> 8) / 16777216) * 4 - 2;
}

const result = {
  runtime: 'onnxruntime-node',
  version: ort.env.versions.node,
  threads: o.threads,
  runs: o.runs,
  load_ms: Math.round(loadMs),
};
for (const B of [1, 8]) {
  const feed = { pixels: new ort.Tensor('float32', pixels.subarray(0, B * per), [B, 3, S, S]) };
  const ms = [], cpu = [];
  for (let r = -1; r < o.runs; r++) {
    const a = performance.now(), c = process.cpuUsage();
    await img.run(feed);
    const d = process.cpuUsage(c);
    if (r >= 0) {
      ms.push((performance.now() - a) / B);
      cpu.push((d.user + d.system) / 1000 / B);
    }
  }
  result[B === 1 ? 'ms_per_image_batch1' : 'ms_per_image_batch8'] = stats(ms);
  result[B === 1 ? 'cpu_ms_per_image_batch1' : 'cpu_ms_per_image_batch8'] = stats(cpu);
}
// A prompt of --tokens ids: [CLS] (101), ordinary word ids, [SEP] (102); no padding.
const ids = new BigInt64Array(o.tokens);
for (let i = 0; i < o.tokens; i++) ids[i] = BigInt(i === 0 ? 101 : i === o.tokens - 1 ? 102 : 2000 + 37 * i);
const tfeed = { ids: new ort.Tensor('int64', ids, [1, o.tokens]) };
const tms = [], tcpu = [];
for (let r = -1; r < o.runs; r++) {
  const a = performance.now(), c = process.cpuUsage();
  await txt.run(tfeed);
  const d = process.cpuUsage(c);
  if (r >= 0) {
    tms.push(performance.now() - a);
    tcpu.push((d.user + d.system) / 1000);
  }
}
result.prompt_tokens = o.tokens;
result.ms_per_prompt = stats(tms);
result.cpu_ms_per_prompt = stats(tcpu);
// 32 prompts of the same length in one run (as a label set's embeddings are
// built): the inner ids rotated by p for prompt p, so that the rows differ.
const P = 32, inner = o.tokens - 2;
const bids = new BigInt64Array(P * o.tokens);
for (let p = 0; p < P; p++)
  for (let i = 0; i < o.tokens; i++)
    bids[p * o.tokens + i] =
      i === 0 || i === o.tokens - 1 ? ids[i] : ids[1 + ((i - 1 + p) % inner)];
const bfeed = { ids: new ort.Tensor('int64', bids, [P, o.tokens]) };
const bms = [];
for (let r = -1; r < o.runs; r++) {
  const a = performance.now();
  await txt.run(bfeed);
  if (r >= 0) bms.push((performance.now() - a) / P);
}
result.batch_prompts = P;
result.ms_per_prompt_batch32 = stats(bms);
result.peak_rss_kb = process.resourceUsage().maxRSS;
console.log(JSON.stringify(result));
