/* Vocabulary, UniMed text cleaning and the uncased BERT WordPiece tokenizer,
 * reproducing HuggingFace's fast BertTokenizer (tokenizers' BertNormalizer +
 * BertPreTokenizer + WordPiece + "[CLS] $A [SEP]" template, right
 * truncation). See tests/tokenizer/NOTES.md for the exact rules and what is
 * not reproduced.
 *
 * Input text is UTF-8. Invalid UTF-8 never fails: um_text_clean first replaces
 * every maximal invalid subsequence by U+FFFD (as Python's
 * bytes.decode("utf-8", "replace") does), and the tokenizer then drops U+FFFD
 * like HF's clean_text does. */
#include "tokenizer.h"

#include <stddef.h>

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- generated tables (model/unicode_tables.c) ---- */
enum {
    UM_U_CTRL = 1,    /* Cc, Cf, Co */
    UM_U_WS = 2,      /* White_Space */
    UM_U_PUNCT = 4,   /* P* or ASCII punctuation */
    UM_U_PYSPACE = 8, /* Python str.isspace() */
    UM_U_MN = 16      /* Mn */
};
unsigned um_uni_flags(uint32_t cp);
int um_uni_map(uint32_t cp, uint32_t out[4]);
int um_uni_ccc(uint32_t cp);
const char *um_html_entity(const char *name, size_t len, int *kind);
int um_html_charref(uint32_t num, uint32_t *cp);
extern const unsigned char um_uni_ascii_flags[128];

static unsigned uflags(uint32_t cp)
{
    return cp < 128 ? um_uni_ascii_flags[cp] : um_uni_flags(cp);
}

#define UM_MAX_WORD_CHARS 100 /* WordPiece max_input_chars_per_word */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ======================================================================
 * UTF-8
 * ====================================================================== */

/* Decodes one code point of s[0..n) (n >= 1). Returns the bytes used; an
 * invalid sequence yields U+FFFD and consumes its maximal valid prefix (at
 * least one byte), which is what Python's "replace" error handler does. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char b = s[0];
    if (b < 0x80) { *cp = b; return 1; }
    size_t need;
    uint32_t c;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) { need = 1; c = b & 0x1Fu; }
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 2; c = b & 0x0Fu;
        if (b == 0xE0) lo = 0xA0;
        else if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3; c = b & 0x07u;
        if (b == 0xF0) lo = 0x90;
        else if (b == 0xF4) hi = 0x8F;
    } else { *cp = 0xFFFD; return 1; }
    size_t i = 1;
    for (; i <= need; i++) {
        if (i >= n) { *cp = 0xFFFD; return i; }
        unsigned char t = s[i];
        if (t < lo || t > hi) { *cp = 0xFFFD; return i; }
        lo = 0x80; hi = 0xBF;
        c = (c << 6) | (t & 0x3Fu);
    }
    *cp = c;
    return i;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Growable byte buffer. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static int sb_reserve(sbuf *b, size_t extra)
{
    if (b->oom) return 0;
    if (b->len + extra + 1 <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) { b->oom = 1; return 0; }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) { b->oom = 1; return 0; }
    b->p = p;
    b->cap = cap;
    return 1;
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (!sb_reserve(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_putcp(sbuf *b, uint32_t cp)
{
    char tmp[4];
    sb_put(b, tmp, utf8_encode(cp, tmp));
}

/* ======================================================================
 * Vocabulary: one token per line, id = line number; hash table lookup.
 * ====================================================================== */

struct unimed_vocab {
    char *data;        /* all tokens, each NUL-terminated */
    size_t *off;       /* token i starts at data + off[i] */
    uint32_t *len;     /* byte length of token i */
    int n;
    int32_t *slots;    /* open addressing, -1 = empty */
    size_t mask;
    size_t max_tok_len;
    int cls, sep, unk;
    int n_special;     /* added (special) tokens matched on the raw text */
    int special_id[5];
    const char *special_tok[5];
    char *path;        /* for error messages */
};

/* BERT's special tokens; those in the vocab are HF "added tokens". */
static const char *const bert_specials[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

int um_vocab_lookup(const unimed_vocab *v, const char *tok, size_t len)
{
    if (!v || (!tok && len)) return -1;
    size_t i = (size_t)hash_bytes(tok, len) & v->mask;
    for (;;) {
        int32_t id = v->slots[i];
        if (id < 0) return -1;
        if (v->len[id] == len && memcmp(v->data + v->off[id], tok, len) == 0) return id;
        i = (i + 1) & v->mask;
    }
}

int unimed_vocab_size(const unimed_vocab *v) { return v ? v->n : 0; }

const char *um_vocab_token(const unimed_vocab *v, int id)
{
    if (!v || id < 0 || id >= v->n) return NULL;
    return v->data + v->off[id];
}

void unimed_vocab_free(unimed_vocab *v)
{
    if (!v) return;
    free(v->data);
    free(v->off);
    free(v->len);
    free(v->slots);
    free(v->path);
    free(v);
}

/* Length of s[0..n) without trailing Unicode White_Space (Rust trim_end, as
 * HF's WordPiece::read_file applies to each line). */
static size_t trim_end_len(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    while (n > 0) {
        size_t k = n - 1; /* start of the last (at most 4-byte) sequence */
        while (k > 0 && (u[k] & 0xC0) == 0x80 && n - k < 4) k--;
        uint32_t cp;
        if (utf8_decode(u + k, n - k, &cp) != n - k || !(um_uni_flags(cp) & UM_U_WS)) break;
        n = k;
    }
    return n;
}

unimed_vocab *unimed_vocab_load(const char *path, char *err, size_t errlen)
{
    if (!path) { set_err(err, errlen, "vocab path is NULL"); return NULL; }
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, errlen, "cannot open vocab file '%s': %s", path, strerror(errno));
        return NULL;
    }
    sbuf raw = {0};
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) sb_put(&raw, chunk, got);
    int rerr = ferror(f);
    fclose(f);
    if (rerr || raw.oom) {
        set_err(err, errlen, rerr ? "cannot read vocab file '%s'" : "out of memory reading vocab file '%s'", path);
        free(raw.p);
        return NULL;
    }
    if (raw.len == 0) {
        set_err(err, errlen, "vocab file '%s' is empty", path);
        free(raw.p);
        return NULL;
    }
    /* Count lines: a final line without '\n' counts, a trailing '\n' does
     * not start another (Rust's str::lines). */
    size_t lines = 0;
    for (size_t i = 0; i < raw.len; i++) lines += raw.p[i] == '\n';
    if (raw.p[raw.len - 1] != '\n') lines++;
    if (lines > (size_t)INT32_MAX / 2) {
        set_err(err, errlen, "vocab file '%s' has too many lines", path);
        free(raw.p);
        return NULL;
    }
    unimed_vocab *v = calloc(1, sizeof *v);
    size_t cap = 16;
    while (cap < lines * 2) cap *= 2;
    if (v) {
        v->off = malloc(lines * sizeof *v->off);
        v->len = malloc(lines * sizeof *v->len);
        v->slots = malloc(cap * sizeof *v->slots);
    }
    if (!v || !v->off || !v->len || !v->slots) {
        set_err(err, errlen, "out of memory loading vocab file '%s'", path);
        unimed_vocab_free(v);
        free(raw.p);
        return NULL;
    }
    v->data = raw.p; /* tokens are NUL-terminated in place */
    v->mask = cap - 1;
    memset(v->slots, 0xff, cap * sizeof *v->slots);
    size_t pos = 0;
    for (size_t id = 0; id < lines; id++) {
        size_t end = pos;
        while (end < raw.len && raw.p[end] != '\n') end++;
        size_t l = end - pos;
        if (l > 0 && raw.p[pos + l - 1] == '\r') l--; /* "\r\n" line ends */
        l = trim_end_len(raw.p + pos, l);
        if (l > UINT32_MAX) l = UINT32_MAX;
        if (pos + l < raw.len) raw.p[pos + l] = '\0';
        v->off[id] = pos;
        v->len[id] = (uint32_t)l;
        if (l > v->max_tok_len) v->max_tok_len = l;
        /* insert; a repeated token keeps the last id, as HF's vocab map does */
        size_t i = (size_t)hash_bytes(raw.p + pos, l) & v->mask;
        for (;;) {
            int32_t o = v->slots[i];
            if (o < 0) { v->slots[i] = (int32_t)id; break; }
            if (v->len[o] == l && memcmp(raw.p + v->off[o], raw.p + pos, l) == 0) {
                v->slots[i] = (int32_t)id;
                break;
            }
            i = (i + 1) & v->mask;
        }
        pos = end + 1;
    }
    v->n = (int)lines;
    size_t pl = strlen(path) + 1;
    v->path = malloc(pl);
    if (v->path) memcpy(v->path, path, pl);
    v->cls = um_vocab_lookup(v, "[CLS]", 5);
    v->sep = um_vocab_lookup(v, "[SEP]", 5);
    v->unk = um_vocab_lookup(v, "[UNK]", 5);
    for (int k = 0; k < 5; k++) {
        int id = um_vocab_lookup(v, bert_specials[k], strlen(bert_specials[k]));
        if (id >= 0) {
            v->special_tok[v->n_special] = bert_specials[k];
            v->special_id[v->n_special++] = id;
        }
    }
    return v;
}

/* ======================================================================
 * UniMed cleaning: html.unescape twice, \s+ -> ' ', strip
 * ====================================================================== */

/* Valid UTF-8 copy of s (invalid sequences -> U+FFFD). */
static void sanitize_utf8(const char *s, size_t n, sbuf *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    sb_reserve(out, n);
    while (i < n) {
        size_t run = i; /* copy ASCII runs fast */
        while (run < n && u[run] < 0x80) run++;
        if (run > i) { sb_put(out, s + i, run - i); i = run; continue; }
        uint32_t cp;
        size_t used = utf8_decode(u + i, n - i, &cp);
        if (cp == 0xFFFD)
            sb_putcp(out, 0xFFFD);
        else
            sb_put(out, s + i, used);
        i += used;
    }
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Characters that end an entity name: html's [^\t\n\f <&#;]. */
static int name_stop(unsigned char c)
{
    return c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';';
}

/* One pass of Python's html.unescape over valid UTF-8 s[0..n). */
static void html_unescape(const char *s, size_t n, sbuf *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    sb_reserve(out, n);
    while (i < n) {
        const char *amp = memchr(s + i, '&', n - i);
        if (!amp) { sb_put(out, s + i, n - i); break; }
        size_t a = (size_t)(amp - s);
        sb_put(out, s + i, a - i);
        size_t j = a + 1;
        if (j < n && u[j] == '#') {
            size_t k = j + 1;
            uint32_t num = 0;
            int base = 0;
            if (k < n && is_digit(u[k])) {
                base = 10;
                for (; k < n && is_digit(u[k]); k++) {
                    uint32_t d = (uint32_t)(u[k] - '0');
                    num = num > (UINT32_MAX - d) / 10 ? UINT32_MAX : num * 10 + d;
                }
            } else if (k + 1 < n && (u[k] == 'x' || u[k] == 'X') && hex_val(u[k + 1]) >= 0) {
                base = 16;
                for (k++; k < n && hex_val(u[k]) >= 0; k++) {
                    uint32_t d = (uint32_t)hex_val(u[k]);
                    num = num > (UINT32_MAX - d) / 16 ? UINT32_MAX : num * 16 + d;
                }
            }
            if (base) {
                if (k < n && u[k] == ';') k++;
                uint32_t cp;
                if (um_html_charref(num, &cp)) sb_putcp(out, cp);
                i = k;
                continue;
            }
            /* "&#" not followed by a number: no reference here */
            sb_put(out, "&", 1);
            i = a + 1;
            continue;
        }
        /* named reference: 1..32 code points that are not in [\t\n\f <&#;] */
        size_t k = j;
        int chars = 0;
        while (k < n && chars < 32 && !name_stop(u[k])) {
            uint32_t cp;
            k += utf8_decode(u + k, n - k, &cp);
            chars++;
        }
        if (chars == 0) { sb_put(out, "&", 1); i = a + 1; continue; }
        int semi = k < n && u[k] == ';';
        size_t end = k + (size_t)semi; /* s = text[j..end) */
        int kind = 0;
        const char *val = um_html_entity(s + j, k - j, &kind);
        if (val && (semi ? (kind & 1) : (kind & 2))) {
            sb_put(out, val, strlen(val));
            i = end;
            continue;
        }
        /* longest prefix s[:x], 2 <= x <= len(s)-1 code points, that is an
         * entity without ';' (only the legacy names are) */
        size_t slen_cp = (size_t)chars + (size_t)semi;
        int done = 0;
        /* character boundaries of s: walk back from the end */
        size_t x_bytes = k; /* end of prefix with slen_cp-1 chars when semi */
        size_t x_cp = slen_cp - 1;
        if (!semi) {
            /* drop the last character */
            x_bytes = k - 1;
            while (x_bytes > j && (u[x_bytes] & 0xC0) == 0x80) x_bytes--;
        }
        while (x_cp >= 2) {
            const char *pv = um_html_entity(s + j, x_bytes - j, &kind);
            if (pv && (kind & 2)) {
                sb_put(out, pv, strlen(pv));
                sb_put(out, s + x_bytes, end - x_bytes);
                done = 1;
                break;
            }
            x_cp--;
            x_bytes--;
            while (x_bytes > j && (u[x_bytes] & 0xC0) == 0x80) x_bytes--;
        }
        if (!done) sb_put(out, s + a, end - a);
        i = end;
    }
}

/* re.sub(r"\s+", " ", s).strip() with Python's Unicode \s. */
static void collapse_ws(const char *s, size_t n, sbuf *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    int pending = 0; /* a space run seen after some text */
    sb_reserve(out, n);
    while (i < n) {
        uint32_t cp;
        size_t used = u[i] < 0x80 ? (cp = u[i], 1) : utf8_decode(u + i, n - i, &cp);
        if (uflags(cp) & UM_U_PYSPACE) {
            pending = out->len > 0;
        } else {
            if (pending) sb_put(out, " ", 1);
            pending = 0;
            sb_put(out, s + i, used);
        }
        i += used;
    }
}

char *um_text_clean(const char *text)
{
    if (!text) text = "";
    size_t n = strlen(text);
    sbuf a = {0}, b = {0}, c = {0};
    sanitize_utf8(text, n, &a);
    html_unescape(a.p ? a.p : "", a.len, &b);
    a.len = 0;
    html_unescape(b.p ? b.p : "", b.len, &a);
    collapse_ws(a.p ? a.p : "", a.len, &c);
    sb_reserve(&c, 0);
    int oom = a.oom || b.oom || c.oom;
    free(a.p);
    free(b.p);
    if (oom) { free(c.p); return NULL; }
    c.p[c.len] = '\0';
    return c.p;
}

/* ======================================================================
 * Tokenizer
 * ====================================================================== */

static int is_cjk(uint32_t cp) /* HF's is_chinese_char ranges */
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

typedef struct {
    const unimed_vocab *v;
    int *ids;
    int n, limit;      /* ids used; pieces stop at limit (room for [SEP]) */
    /* current word: "##" followed by its bytes (the prefix room is used by
     * the WordPiece loop) */
    char buf[2 + 4 * UM_MAX_WORD_CHARS + 8];
    size_t blen;       /* bytes of the word (after the 2-byte room) */
    int nchars;        /* characters in the word (counted past the limit) */
    uint32_t cps[UM_MAX_WORD_CHARS + 1];
    unsigned char ccc[UM_MAX_WORD_CHARS + 1];
} tok_state;

static int full(const tok_state *t) { return t->n >= t->limit; }

static void emit(tok_state *t, int id)
{
    if (t->n < t->limit) t->ids[t->n++] = id;
}

/* WordPiece of the current word, then reset it. */
static void flush_word(tok_state *t)
{
    if (t->nchars == 0) return;
    const unimed_vocab *v = t->v;
    int nchars = t->nchars;
    t->nchars = 0;
    t->blen = 0;
    if (nchars > UM_MAX_WORD_CHARS) { emit(t, v->unk); return; }
    /* byte offset of each character boundary */
    size_t bnd[UM_MAX_WORD_CHARS + 1];
    char tmp[4];
    bnd[0] = 0;
    for (int c = 0; c < nchars; c++) bnd[c + 1] = bnd[c] + utf8_encode(t->cps[c], tmp);
    char *w = t->buf + 2; /* word bytes */
    int pieces[UM_MAX_WORD_CHARS];
    int np = 0;
    int start = 0;
    while (start < nchars) {
        int end = nchars, found = -1;
        while (start < end) {
            const char *p;
            size_t len;
            if (start > 0) {
                /* the bytes before start are consumed: write "##" there
                 * (t->buf keeps 2 bytes before w, so this may reach w[-2];
                 * the offset is signed so that no size_t wraps around) */
                ptrdiff_t at = (ptrdiff_t)bnd[start] - 2;
                w[at] = '#';
                w[at + 1] = '#';
                p = w + at;
                len = bnd[end] - bnd[start] + 2;
            } else {
                p = w;
                len = bnd[end];
            }
            if (len <= v->max_tok_len) {
                found = um_vocab_lookup(v, p, len);
                if (found >= 0) break;
            }
            end--;
        }
        if (found < 0) { emit(t, v->unk); return; }
        pieces[np++] = found;
        start = end;
    }
    for (int k = 0; k < np; k++) emit(t, pieces[k]);
}

/* Appends one normalized character to the current word. */
static void add_char(tok_state *t, uint32_t cp)
{
    if (t->nchars >= UM_MAX_WORD_CHARS) { /* only the count matters now */
        if (t->nchars < UM_MAX_WORD_CHARS + 1) t->nchars++;
        return;
    }
    int cc = cp >= 0x300 ? um_uni_ccc(cp) : 0;
    int at = t->nchars;
    /* NFD canonical ordering among the (non-Mn) marks that remain */
    while (cc && at > 0 && t->ccc[at - 1] > cc) {
        t->cps[at] = t->cps[at - 1];
        t->ccc[at] = t->ccc[at - 1];
        at--;
    }
    t->cps[at] = cp;
    t->ccc[at] = (unsigned char)cc;
    t->nchars++;
    /* rebuild the bytes (reordering is rare; appending is the common case) */
    char *w = t->buf + 2;
    if (at == t->nchars - 1) {
        t->blen += utf8_encode(cp, w + t->blen);
    } else {
        size_t b = 0;
        for (int c = 0; c < t->nchars; c++) b += utf8_encode(t->cps[c], w + b);
        t->blen = b;
    }
}

/* A character produced by the normalizer enters the pre-tokenizer. */
static void pretok_char(tok_state *t, uint32_t cp)
{
    unsigned f = uflags(cp);
    if (f & UM_U_WS) { flush_word(t); return; }
    if (f & UM_U_PUNCT) {
        flush_word(t);
        add_char(t, cp);
        flush_word(t);
        return;
    }
    add_char(t, cp);
}

/* Strip accents (NFD, drop Mn) and lowercase one cleaned character. */
static void normalize_char(tok_state *t, uint32_t cp)
{
    if (cp >= 'A' && cp <= 'Z') { pretok_char(t, cp + 32); return; }
    if (cp < 0x80) { pretok_char(t, cp); return; }
    if (cp >= 0xAC00 && cp <= 0xD7A3) { /* Hangul syllable: L V (T) */
        uint32_t s = cp - 0xAC00;
        pretok_char(t, 0x1100 + s / 588);
        pretok_char(t, 0x1161 + (s % 588) / 28);
        if (s % 28) pretok_char(t, 0x11A7 + s % 28);
        return;
    }
    if (uflags(cp) & UM_U_MN) return;
    uint32_t m[4];
    int k = um_uni_map(cp, m);
    for (int i = 0; i < k; i++) pretok_char(t, m[i]);
}

/* BertNormalizer + pre-tokenizer + WordPiece over text[0..n) (valid UTF-8,
 * no added token inside). */
static void tokenize_segment(tok_state *t, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n && !full(t)) {
        uint32_t cp;
        size_t used = u[i] < 0x80 ? (cp = u[i], 1) : utf8_decode(u + i, n - i, &cp);
        i += used;
        /* clean_text */
        if (cp == 0 || cp == 0xFFFD) continue;
        if (cp == '\t' || cp == '\n' || cp == '\r') { flush_word(t); continue; }
        unsigned f = uflags(cp);
        if (f & UM_U_CTRL) continue;
        if (f & UM_U_WS) { flush_word(t); continue; }
        /* handle_chinese_chars: the ideograph becomes a word of its own */
        if (is_cjk(cp)) {
            flush_word(t);
            normalize_char(t, cp);
            flush_word(t);
            continue;
        }
        normalize_char(t, cp);
    }
    flush_word(t);
}

int um_tokenize(const unimed_vocab *v, const char *text, int max_len, int *ids,
                char *err, size_t errlen)
{
    if (!v || !ids) { set_err(err, errlen, "um_tokenize: NULL vocab or ids"); return -1; }
    if (max_len < 2) {
        set_err(err, errlen, "um_tokenize: max_len %d cannot hold [CLS] and [SEP]", max_len);
        return -1;
    }
    const char *missing = v->cls < 0 ? "[CLS]" : v->sep < 0 ? "[SEP]" : v->unk < 0 ? "[UNK]" : NULL;
    if (missing) {
        set_err(err, errlen, "vocab file '%s' has no %s token (needed by the BERT tokenizer)",
                v->path ? v->path : "?", missing);
        return -1;
    }
    char *clean = um_text_clean(text);
    if (!clean) { set_err(err, errlen, "out of memory cleaning the text"); return -1; }
    tok_state *t = malloc(sizeof *t);
    if (!t) {
        free(clean);
        set_err(err, errlen, "out of memory tokenizing");
        return -1;
    }
    t->v = v;
    t->ids = ids;
    t->n = 0;
    t->limit = max_len - 1;
    t->blen = 0;
    t->nchars = 0;
    t->buf[0] = t->buf[1] = '#';
    ids[t->n++] = v->cls;

    /* Added tokens ([PAD] [UNK] [CLS] [SEP] [MASK] that are in the vocab)
     * are cut out of the raw text first, case-sensitively, as HF does with
     * special tokens (normalized: false); the rest is normalized per piece. */
    size_t n = strlen(clean), seg = 0, i = 0;
    while (i < n && !full(t)) {
        const char *br = memchr(clean + i, '[', n - i);
        if (!br) break;
        i = (size_t)(br - clean);
        int hit = -1;
        size_t hl = 0;
        for (int k = 0; k < v->n_special; k++) {
            size_t l = strlen(v->special_tok[k]);
            if (l <= n - i && memcmp(clean + i, v->special_tok[k], l) == 0) {
                hit = v->special_id[k];
                hl = l;
                break;
            }
        }
        if (hit < 0) { i++; continue; }
        tokenize_segment(t, clean + seg, i - seg);
        emit(t, hit);
        i += hl;
        seg = i;
    }
    if (!full(t)) tokenize_segment(t, clean + seg, n - seg);
    ids[t->n++] = v->sep;
    int count = t->n;
    free(t);
    free(clean);
    return count;
}

int unimed_vocab_tokenize(const unimed_vocab *v, const char *text, int *ids, int max_ids,
                          char *err, size_t errlen)
{
    return um_tokenize(v, text, max_ids, ids, err, errlen);
}
