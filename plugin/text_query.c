/* The text side of GET search: a query's text embedding.
 *
 * The text tower is the costly part of a search (BERT-base: about 2.5
 * GFLOP for a short query, some 15-20 ms of both cores), and the REST
 * engine runs one call at a time. Two things keep it from queueing every
 * search behind the others:
 *
 *  - a cache of the last TEXT_CACHE_SIZE texts' embeddings (exact text,
 *    least recently used out): paging through a search, or a text the
 *    Explorer panel or a client repeats, costs no text tower at all;
 *  - one text-tower call for the texts that arrive together: the first
 *    request that finds the tower idle takes every waiting text (up to
 *    TEXT_BATCH) into one call, whose weights are then read from memory
 *    once for all of them; the others wait for its answer.
 *
 * A text's embedding is the same whether it was computed alone or in a
 * batch up to float rounding (the tower computes only real tokens, packed;
 * a batch may take other GEMM blocking paths: |difference| of the order of
 * 1e-7 per value). */
#include <stdlib.h>
#include <string.h>

#include "text_query.h"

#define TEXT_CACHE_SIZE 256
#define TEXT_BATCH 16

typedef struct {
  char *text;    /* NULL: empty slot */
  float *v;      /* g.dim floats */
  unsigned long long used; /* last use (tick) */
} cache_slot_t;

typedef struct request {
  const char *text;
  float *out;
  int rc; /* 0, or -1 with err */
  char err[512];
  int done;
  struct request *next;
} request_t;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  cache_slot_t cache[TEXT_CACHE_SIZE];
  unsigned long long tick;
  request_t *waiting, **tail;
  int busy;
  long long hits, misses, calls;
} tq = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static int cache_get_locked(const char *text, float *out) {
  for (int i = 0; i < TEXT_CACHE_SIZE; i++)
    if (tq.cache[i].text && strcmp(tq.cache[i].text, text) == 0) {
      memcpy(out, tq.cache[i].v, (size_t)g.dim * sizeof *out);
      tq.cache[i].used = ++tq.tick;
      return 1;
    }
  return 0;
}

static void cache_put_locked(const char *text, const float *v) {
  int victim = 0;
  for (int i = 0; i < TEXT_CACHE_SIZE; i++) {
    if (tq.cache[i].text && strcmp(tq.cache[i].text, text) == 0) return;
    if (!tq.cache[i].text) {
      victim = i;
      break;
    }
    if (tq.cache[i].used < tq.cache[victim].used) victim = i;
  }
  cache_slot_t *c = &tq.cache[victim];
  char *t = xstrdup(text);
  float *nv = c->v ? c->v : malloc((size_t)g.dim * sizeof *nv);
  if (!t || !nv) {
    free(t);
    if (!c->v) free(nv);
    return;
  }
  free(c->text);
  c->text = t;
  c->v = nv;
  memcpy(c->v, v, (size_t)g.dim * sizeof *v);
  c->used = ++tq.tick;
}

/* Encodes the batch (without tq.mu held) and fills each request. A batch
 * that fails is encoded text by text, so that each text gets its own
 * error. */
static void encode_batch(request_t **batch, int n) {
  const char *texts[TEXT_BATCH];
  float *out = malloc((size_t)n * (size_t)g.dim * sizeof *out);
  char err[512] = "";
  for (int i = 0; i < n; i++) texts[i] = batch[i]->text;
  pthread_mutex_lock(&g.rest_engine_mu);
  int rc = out ? unimed_engine_embed_texts(g.rest_engine, texts, n, out, err, sizeof err) : -1;
  if (rc != 0 && n > 1) {
    for (int i = 0; i < n; i++)
      batch[i]->rc = unimed_engine_embed_texts(g.rest_engine, &texts[i], 1, batch[i]->out, batch[i]->err,
                                               sizeof batch[i]->err);
  } else {
    for (int i = 0; i < n; i++) {
      batch[i]->rc = rc;
      if (rc == 0)
        memcpy(batch[i]->out, out + (size_t)i * (size_t)g.dim, (size_t)g.dim * sizeof *out);
      else
        snprintf(batch[i]->err, sizeof batch[i]->err, "%s", out ? err : "out of memory");
    }
  }
  pthread_mutex_unlock(&g.rest_engine_mu);
  free(out);
}

int text_query_embed(const char *text, float *out, char *err, size_t errlen) {
  pthread_mutex_lock(&tq.mu);
  if (cache_get_locked(text, out)) {
    tq.hits++;
    pthread_mutex_unlock(&tq.mu);
    return 0;
  }
  tq.misses++;
  request_t me = {.text = text, .out = out};
  if (!tq.tail) tq.tail = &tq.waiting;
  *tq.tail = &me;
  tq.tail = &me.next;
  while (!me.done) {
    if (tq.busy) {
      pthread_cond_wait(&tq.cv, &tq.mu);
      continue;
    }
    /* The tower is idle: this request encodes every waiting text. */
    request_t *batch[TEXT_BATCH];
    int n = 0;
    while (tq.waiting && n < TEXT_BATCH) {
      batch[n++] = tq.waiting;
      tq.waiting = tq.waiting->next;
    }
    if (!tq.waiting) tq.tail = &tq.waiting;
    tq.busy = 1;
    tq.calls++;
    pthread_mutex_unlock(&tq.mu);
    encode_batch(batch, n);
    pthread_mutex_lock(&tq.mu);
    for (int i = 0; i < n; i++) {
      if (batch[i]->rc == 0) cache_put_locked(batch[i]->text, batch[i]->out);
      batch[i]->done = 1;
    }
    tq.busy = 0;
    pthread_cond_broadcast(&tq.cv);
  }
  pthread_mutex_unlock(&tq.mu);
  if (me.rc != 0) snprintf(err, errlen, "%s", me.err);
  return me.rc;
}

void text_query_stats(long long *hits, long long *misses, long long *calls) {
  pthread_mutex_lock(&tq.mu);
  *hits = tq.hits;
  *misses = tq.misses;
  *calls = tq.calls;
  pthread_mutex_unlock(&tq.mu);
}

void text_query_free(void) {
  pthread_mutex_lock(&tq.mu);
  for (int i = 0; i < TEXT_CACHE_SIZE; i++) {
    free(tq.cache[i].text);
    free(tq.cache[i].v);
    tq.cache[i].text = NULL;
    tq.cache[i].v = NULL;
  }
  pthread_mutex_unlock(&tq.mu);
}
