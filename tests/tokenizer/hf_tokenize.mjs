// Reference token ids from HuggingFace's pure-JavaScript tokenizer
// (@huggingface/tokenizers, no network, no model download).
//
//   node hf_tokenize.mjs VOCAB.txt CONTEXT_LENGTH < texts.jsonl > ids.jsonl
//
// stdin: one JSON value per line, either a string or {"text": string}.
// stdout: {"text": ..., "ids": [...]} per line, in order.
//
// The tokenizer.json built here is the one transformers' BertConverter makes
// for an uncased BERT vocab (BiomedBERT's): BertNormalizer{clean_text,
// handle_chinese_chars, strip_accents: null, lowercase: true},
// BertPreTokenizer, WordPiece{unk [UNK], "##", max_input_chars_per_word 100},
// TemplateProcessing "[CLS] $A [SEP]", and the BERT special tokens as added
// tokens (normalized: false). tokenizers.js has no truncation, so the
// pieces are cut here exactly as HF's right truncation does: the first
// CONTEXT-2 pieces are kept, then [SEP].
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Tokenizer } from '@huggingface/tokenizers';

const [vocabPath, ctxArg] = process.argv.slice(2);
if (!vocabPath || !ctxArg) {
  console.error('usage: node hf_tokenize.mjs VOCAB.txt CONTEXT_LENGTH < texts.jsonl');
  process.exit(2);
}
const context = Number.parseInt(ctxArg, 10);
if (!(context >= 2)) {
  console.error(`bad context length ${ctxArg}`);
  process.exit(2);
}

// vocab.txt as HF's WordPiece::read_file: id = line number, each line
// trimmed at the end, a later duplicate wins.
const text = readFileSync(vocabPath, 'utf8');
const lines = text.split('\n');
if (lines.length && lines[lines.length - 1] === '') lines.pop();
const vocab = {};
lines.forEach((line, i) => {
  vocab[line.replace(/\s+$/u, '')] = i;
});
for (const t of ['[CLS]', '[SEP]', '[UNK]']) {
  if (!(t in vocab)) {
    console.error(`vocab ${vocabPath} has no ${t}`);
    process.exit(2);
  }
}
const added_tokens = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  .filter((t) => t in vocab)
  .map((t) => ({
    id: vocab[t], content: t, single_word: false, lstrip: false, rstrip: false,
    normalized: false, special: true,
  }));

const tokenizerJson = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens,
  normalizer: {
    type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true,
    strip_accents: null, lowercase: true,
  },
  pre_tokenizer: { type: 'BertPreTokenizer' },
  post_processor: {
    type: 'TemplateProcessing',
    single: [
      { SpecialToken: { id: '[CLS]', type_id: 0 } },
      { Sequence: { id: 'A', type_id: 0 } },
      { SpecialToken: { id: '[SEP]', type_id: 0 } },
    ],
    pair: [
      { SpecialToken: { id: '[CLS]', type_id: 0 } },
      { Sequence: { id: 'A', type_id: 0 } },
      { SpecialToken: { id: '[SEP]', type_id: 0 } },
      { Sequence: { id: 'B', type_id: 1 } },
      { SpecialToken: { id: '[SEP]', type_id: 1 } },
    ],
    special_tokens: {
      '[CLS]': { id: '[CLS]', ids: [vocab['[CLS]']], tokens: ['[CLS]'] },
      '[SEP]': { id: '[SEP]', ids: [vocab['[SEP]']], tokens: ['[SEP]'] },
    },
  },
  decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
  model: {
    type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##',
    max_input_chars_per_word: 100, vocab,
  },
};
const tokenizer = new Tokenizer(tokenizerJson, {
  do_lower_case: true, model_max_length: context, clean_up_tokenization_spaces: true,
});
const cls = vocab['[CLS]'];
const sep = vocab['[SEP]'];

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
const out = [];
for await (const line of rl) {
  if (line === '') continue;
  const v = JSON.parse(line);
  const t = typeof v === 'string' ? v : v.text;
  let ids = tokenizer.encode(t).ids;
  if (ids[0] !== cls || ids[ids.length - 1] !== sep) {
    console.error(`template did not produce [CLS] ... [SEP] for ${JSON.stringify(t)}`);
    process.exit(1);
  }
  if (ids.length > context) ids = ids.slice(0, context - 1).concat([sep]);
  out.push(JSON.stringify({ text: t, ids }));
  if (out.length >= 256) {
    process.stdout.write(out.join('\n') + '\n');
    out.length = 0;
  }
}
if (out.length) process.stdout.write(out.join('\n') + '\n');
