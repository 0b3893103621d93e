/* The vocabulary builder of unimed_train.h: a BERT vocab.txt made from the
 * texts a model will read (captions), for a model trained from scratch.
 * Words are counted in an open-addressing table; the file lists the special
 * tokens, the characters (alone and as "##x") and the most frequent words. */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unimed_train.h"

typedef struct {
  char *tok;
  int count;
} vb_entry;

struct unimed_vocab_builder {
  vb_entry *words;
  int n, cap;
  int *slots;           /* open addressing: index + 1 into words, 0 empty */
  size_t n_slots;       /* power of two, > 2 n */
  int chars[256];       /* ASCII characters seen */
  char **uchars;        /* non-ASCII code points seen (UTF-8) */
  int n_uchars, cap_uchars;
};

unimed_vocab_builder *unimed_vocab_builder_new(void) { return calloc(1, sizeof(unimed_vocab_builder)); }

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

static int rehash(unimed_vocab_builder *b, size_t n_slots) {
  int *ns = calloc(n_slots, sizeof(int));
  if (!ns) return -1;
  for (int i = 0; i < b->n; i++) {
    size_t k = hash_bytes(b->words[i].tok, strlen(b->words[i].tok)) & (n_slots - 1);
    while (ns[k]) k = (k + 1) & (n_slots - 1);
    ns[k] = i + 1;
  }
  free(b->slots);
  b->slots = ns;
  b->n_slots = n_slots;
  return 0;
}

static void add_word(unimed_vocab_builder *b, const char *w, size_t len) {
  if ((size_t)(b->n + 1) * 2 >= b->n_slots && rehash(b, b->n_slots ? b->n_slots * 2 : 1024) != 0)
    return;
  size_t k = hash_bytes(w, len) & (b->n_slots - 1);
  while (b->slots[k]) {
    vb_entry *e = &b->words[b->slots[k] - 1];
    if (strlen(e->tok) == len && !memcmp(e->tok, w, len)) {
      e->count++;
      return;
    }
    k = (k + 1) & (b->n_slots - 1);
  }
  if (b->n == b->cap) {
    int nc = b->cap ? b->cap * 2 : 256;
    vb_entry *nw = realloc(b->words, (size_t)nc * sizeof *nw);
    if (!nw) return;
    b->words = nw;
    b->cap = nc;
  }
  char *t = malloc(len + 1);
  if (!t) return;
  memcpy(t, w, len);
  t[len] = 0;
  b->words[b->n].tok = t;
  b->words[b->n++].count = 1;
  b->slots[k] = b->n;
}

static void add_uchar(unimed_vocab_builder *b, const char *s, size_t len) {
  for (int i = 0; i < b->n_uchars; i++)
    if (strlen(b->uchars[i]) == len && !memcmp(b->uchars[i], s, len)) return;
  if (b->n_uchars == b->cap_uchars) {
    int nc = b->cap_uchars ? b->cap_uchars * 2 : 32;
    char **nu = realloc(b->uchars, (size_t)nc * sizeof *nu);
    if (!nu) return;
    b->uchars = nu;
    b->cap_uchars = nc;
  }
  char *t = malloc(len + 1);
  if (!t) return;
  memcpy(t, s, len);
  t[len] = 0;
  b->uchars[b->n_uchars++] = t;
}

void unimed_vocab_builder_add(void *builder, const char *text) {
  unimed_vocab_builder *b = builder;
  char word[256];
  size_t wl = 0;
  for (const unsigned char *p = (const unsigned char *)text;; p++) {
    unsigned char ch = *p;
    int boundary = ch == 0 || isspace(ch) || (ch < 128 && ispunct(ch));
    if (boundary) {
      if (wl) add_word(b, word, wl);
      wl = 0;
      if (ch == 0) break;
      if (ispunct(ch)) b->chars[ch] = 1;
      continue;
    }
    if (ch < 128) {
      ch = (unsigned char)tolower(ch);
      b->chars[ch] = 1;
      if (wl < sizeof word - 1) word[wl++] = (char)ch;
    } else { /* one UTF-8 sequence */
      size_t n = ch >= 0xF0 ? 4 : ch >= 0xE0 ? 3 : ch >= 0xC0 ? 2 : 1, k = 1;
      while (k < n && (p[k] & 0xC0) == 0x80) k++;
      add_uchar(b, (const char *)p, k);
      if (wl + k < sizeof word - 1) memcpy(word + wl, p, k), wl += k;
      p += k - 1;
    }
  }
}

static int cmp_words(const void *a, const void *b) {
  const vb_entry *x = a, *y = b;
  if (x->count != y->count) return y->count - x->count;
  return strcmp(x->tok, y->tok);
}

int unimed_vocab_builder_write(unimed_vocab_builder *b, const char *path, int max_size, char *err,
                           size_t errlen) {
  FILE *fp = fopen(path, "w");
  if (!fp) {
    unimed_set_err(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  int lines = 0;
  static const char *const specials[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (int i = 0; i < 5; i++) fprintf(fp, "%s\n", specials[i]), lines++;
  for (int c = 'a'; c <= 'z'; c++) b->chars[c] = 1;
  for (int c = '0'; c <= '9'; c++) b->chars[c] = 1;
  for (int c = 33; c < 127; c++)
    if (b->chars[c] && !isupper(c)) fprintf(fp, "%c\n", c), lines++;
  for (int i = 0; i < b->n_uchars; i++) fprintf(fp, "%s\n", b->uchars[i]), lines++;
  for (int c = 33; c < 127; c++)
    if (b->chars[c] && isalnum(c) && !isupper(c)) fprintf(fp, "##%c\n", c), lines++;
  for (int i = 0; i < b->n_uchars; i++) fprintf(fp, "##%s\n", b->uchars[i]), lines++;
  qsort(b->words, (size_t)b->n, sizeof *b->words, cmp_words);
  for (int i = 0; i < b->n && lines < max_size; i++) {
    const char *w = b->words[i].tok;
    if (strlen(w) == 1 || (strlen(w) <= 4 && (unsigned char)w[0] >= 128 && b->n_uchars))
      continue; /* single characters are there already */
    fprintf(fp, "%s\n", w);
    lines++;
  }
  if (fclose(fp) != 0) {
    unimed_set_err(err, errlen, "%s: write failed", path);
    return -1;
  }
  return lines;
}

void unimed_vocab_builder_free(unimed_vocab_builder *b) {
  if (!b) return;
  for (int i = 0; i < b->n; i++) free(b->words[i].tok);
  for (int i = 0; i < b->n_uchars; i++) free(b->uchars[i]);
  free(b->words);
  free(b->slots);
  free(b->uchars);
  free(b);
}
