/* Tests of model/tokenizer.c.
 *
 *   test_tokenizer parity VOCAB CONTEXT REF.jsonl
 *       REF.jsonl lines are {"text", "clean", "ids"} from hf_reference.py
 *       (Python's html.unescape + HuggingFace's tokenizer). Every text must
 *       give the same cleaned text and the same ids. Exit 77 when REF.jsonl
 *       does not exist (the reference could not be made: no node/npm).
 *   test_tokenizer unit VOCAB CLEAN_EXPECTED.jsonl TMPDIR
 *       cleaning against Python's results (clean_expected.py), invalid
 *       UTF-8, huge inputs, vocab errors, truncation, special cases. */
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SKIP 77

static int failures = 0;
static int checks = 0;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        checks++;                                                              \
        if (!(cond)) {                                                         \
            failures++;                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);               \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap);
    size_t got;
    while (p && (got = fread(p + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            char *q = realloc(p, cap * 2);
            if (!q) { free(p); p = NULL; break; }
            p = q;
            cap *= 2;
        }
    }
    fclose(f);
    if (p) p[n] = '\0';
    if (len) *len = n;
    return p;
}

static void print_escaped(FILE *f, const char *s, size_t max)
{
    fputc('"', f);
    size_t n = 0;
    for (const unsigned char *u = (const unsigned char *)s; *u && n < max; u++, n++) {
        if (*u == '"' || *u == '\\') fprintf(f, "\\%c", *u);
        else if (*u < 0x20 || *u == 0x7f) fprintf(f, "\\x%02x", *u);
        else fputc(*u, f);
    }
    if (n >= max) fputs("...", f);
    fputc('"', f);
}

static void print_ids(FILE *f, const unimed_vocab *v, const int *ids, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        const char *t = um_vocab_token(v, ids[i]);
        fprintf(f, "%s%d:%s", i ? " " : "", ids[i], t ? t : "?");
    }
    fputs("]\n", f);
}

static int valid_utf8(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    while (*u) {
        unsigned char b = *u;
        int need;
        unsigned lo = 0x80, hi = 0xBF;
        if (b < 0x80) { u++; continue; }
        else if (b >= 0xC2 && b <= 0xDF) need = 1;
        else if (b >= 0xE0 && b <= 0xEF) { need = 2; if (b == 0xE0) lo = 0xA0; if (b == 0xED) hi = 0x9F; }
        else if (b >= 0xF0 && b <= 0xF4) { need = 3; if (b == 0xF0) lo = 0x90; if (b == 0xF4) hi = 0x8F; }
        else return 0;
        u++;
        for (int i = 0; i < need; i++, u++) {
            if (*u < lo || *u > hi) return 0;
            lo = 0x80; hi = 0xBF;
        }
    }
    return 1;
}

/* ---------------------------------------------------------------- parity */

static int run_parity(const char *vocab_path, int context, const char *ref_path)
{
    struct stat st;
    if (stat(ref_path, &st) != 0) {
        printf("SKIP: reference %s does not exist (no node/npm to make it)\n", ref_path);
        return SKIP;
    }
    char err[512];
    unimed_vocab *v = unimed_vocab_load(vocab_path, err, sizeof err);
    if (!v) { fprintf(stderr, "%s\n", err); return 1; }
    size_t len;
    char *data = read_file(ref_path, &len);
    if (!data) { fprintf(stderr, "cannot read %s\n", ref_path); return 1; }
    int *ids = malloc(sizeof(int) * (size_t)context);
    int total = 0, same = 0, clean_same = 0, shown = 0;
    long long pieces = 0;
    double secs = 0;
    char *line = data;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        if (*line) {
            cJSON *j = cJSON_Parse(line);
            cJSON *jt = j ? cJSON_GetObjectItemCaseSensitive(j, "text") : NULL;
            cJSON *jc = j ? cJSON_GetObjectItemCaseSensitive(j, "clean") : NULL;
            cJSON *ji = j ? cJSON_GetObjectItemCaseSensitive(j, "ids") : NULL;
            if (!cJSON_IsString(jt) || !cJSON_IsArray(ji)) {
                fprintf(stderr, "bad reference line %d in %s\n", total + 1, ref_path);
                return 1;
            }
            const char *text = jt->valuestring;
            total++;
            int ok_clean = 1;
            if (cJSON_IsString(jc)) {
                char *c = um_text_clean(text);
                ok_clean = c && strcmp(c, jc->valuestring) == 0;
                if (!ok_clean && shown < 20) {
                    shown++;
                    fprintf(stderr, "CLEAN MISMATCH text ");
                    print_escaped(stderr, text, 300);
                    fprintf(stderr, "\n  python: ");
                    print_escaped(stderr, jc->valuestring, 300);
                    fprintf(stderr, "\n  ours:   ");
                    print_escaped(stderr, c ? c : "(null)", 300);
                    fputc('\n', stderr);
                }
                free(c);
            }
            clean_same += ok_clean;
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            int n = um_tokenize(v, text, context, ids, err, sizeof err);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            secs += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
            int rn = cJSON_GetArraySize(ji);
            int *ref = malloc(sizeof(int) * (size_t)(rn ? rn : 1));
            for (int k = 0; k < rn; k++) ref[k] = cJSON_GetArrayItem(ji, k)->valueint;
            int eq = n == rn;
            int first = -1;
            for (int k = 0; k < (n < rn ? n : rn); k++)
                if (ids[k] != ref[k]) { eq = 0; first = k; break; }
            if (first < 0 && n != rn) first = n < rn ? n : rn;
            if (n < 0) { eq = 0; fprintf(stderr, "um_tokenize error: %s\n", err); }
            if (eq) {
                same++;
                pieces += n;
            } else if (shown < 20) {
                shown++;
                fprintf(stderr, "MISMATCH text ");
                print_escaped(stderr, text, 400);
                fprintf(stderr, "\n  first difference at index %d\n  HF:  ", first);
                print_ids(stderr, v, ref, rn);
                fprintf(stderr, "  C:   ");
                print_ids(stderr, v, ids, n > 0 ? n : 0);
            }
            free(ref);
            cJSON_Delete(j);
        }
        line = nl ? nl + 1 : NULL;
    }
    printf("%s (vocab %d tokens, context %d): %d texts, %d identical ids, %d identical cleaned texts; "
           "%lld ids in %.3f ms\n",
           ref_path, unimed_vocab_size(v), context, total, same, clean_same, pieces, secs * 1e3);
    free(ids);
    free(data);
    unimed_vocab_free(v);
    if (total == 0) { fprintf(stderr, "no texts in %s\n", ref_path); return 1; }
    return (same == total && clean_same == total) ? 0 : 1;
}

/* ------------------------------------------------------------------ unit */

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static void unit_clean_cases(const char *path)
{
    size_t len;
    char *data = read_file(path, &len);
    CHECK(data != NULL, "cannot read %s", path);
    if (!data) return;
    int n = 0, ok = 0;
    char *line = data;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        cJSON *j = cJSON_Parse(line);
        cJSON *jh = cJSON_GetObjectItemCaseSensitive(j, "hex");
        cJSON *jc = cJSON_GetObjectItemCaseSensitive(j, "clean");
        if (cJSON_IsString(jh) && cJSON_IsString(jc)) {
            size_t hl = strlen(jh->valuestring);
            char *in = malloc(hl / 2 + 1);
            for (size_t k = 0; k < hl / 2; k++)
                in[k] = (char)(hexval(jh->valuestring[2 * k]) * 16 + hexval(jh->valuestring[2 * k + 1]));
            in[hl / 2] = '\0';
            char *c = um_text_clean(in);
            n++;
            if (c && strcmp(c, jc->valuestring) == 0) ok++;
            else {
                failures++;
                fprintf(stderr, "FAIL clean of bytes %s\n  python: ", jh->valuestring);
                print_escaped(stderr, jc->valuestring, 200);
                fprintf(stderr, "\n  ours:   ");
                print_escaped(stderr, c ? c : "(null)", 200);
                fputc('\n', stderr);
            }
            checks++;
            free(c);
            free(in);
        }
        cJSON_Delete(j);
        line = nl ? nl + 1 : NULL;
    }
    printf("cleaning: %d/%d cases equal to Python's html.unescape results\n", ok, n);
    CHECK(n > 100, "too few cleaning cases (%d)", n);
    free(data);
}

static int write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fputs(content, f);
    return fclose(f) == 0;
}

/* ids of text as a space-separated token string, for readable checks */
static char *tok_str(const unimed_vocab *v, const char *text, int max_len)
{
    static char out[4096];
    int ids[512];
    char err[256];
    int n = um_tokenize(v, text, max_len, ids, err, sizeof err);
    if (n < 0) { snprintf(out, sizeof out, "ERROR: %s", err); return out; }
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *t = um_vocab_token(v, ids[i]);
        if (i) strncat(out, " ", sizeof out - strlen(out) - 1);
        strncat(out, t ? t : "?", sizeof out - strlen(out) - 1);
    }
    return out;
}

#define CHECK_TOK(v, text, max_len, want)                                      \
    do {                                                                       \
        const char *got_ = tok_str(v, text, max_len);                          \
        CHECK(strcmp(got_, want) == 0, "tokenize %s: got '%s', want '%s'",     \
              #text, got_, want);                                              \
    } while (0)

static void unit_vocab_errors(const char *tmp)
{
    char err[1024], path[1024];
    const char *missing = "/nonexistent-dir-unimed/vocab.txt";
    unimed_vocab *v = unimed_vocab_load(missing, err, sizeof err);
    CHECK(v == NULL, "loading a missing vocab must fail");
    CHECK(strstr(err, missing) != NULL, "error must name the file: %s", err);
    printf("missing vocab: %s\n", err);

    snprintf(path, sizeof path, "%s/empty_vocab.txt", tmp);
    write_file(path, "");
    v = unimed_vocab_load(path, err, sizeof err);
    CHECK(v == NULL && strstr(err, path), "empty vocab must fail naming the file: %s", err);

    static const struct { const char *name, *content, *missing; } cases[] = {
        {"no_cls", "[PAD]\n[UNK]\n[SEP]\na\n", "[CLS]"},
        {"no_sep", "[PAD]\n[UNK]\n[CLS]\na\n", "[SEP]"},
        {"no_unk", "[PAD]\n[CLS]\n[SEP]\na\n", "[UNK]"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        snprintf(path, sizeof path, "%s/%s.txt", tmp, cases[k].name);
        CHECK(write_file(path, cases[k].content), "cannot write %s", path);
        v = unimed_vocab_load(path, err, sizeof err);
        CHECK(v != NULL, "vocab %s should load: %s", path, err);
        if (!v) continue;
        int ids[8];
        err[0] = '\0';
        int n = um_tokenize(v, "a", 8, ids, err, sizeof err);
        CHECK(n == -1, "tokenize with %s must fail", cases[k].name);
        CHECK(strstr(err, cases[k].missing) != NULL, "error must name %s: %s", cases[k].missing, err);
        printf("vocab without %s: %s\n", cases[k].missing, err);
        unimed_vocab_free(v);
    }
}

static void unit_vocab_format(const char *tmp)
{
    char err[512], path[1024];
    snprintf(path, sizeof path, "%s/format_vocab.txt", tmp);
    /* CRLF line ends, trailing blanks, a duplicate (the later id wins, as in
     * HF's vocab map), no final newline */
    CHECK(write_file(path, "[PAD]\r\n[UNK]\r\n[CLS]  \n[SEP]\t\nlung\nlung\n##s\r\nx"), "write");
    unimed_vocab *v = unimed_vocab_load(path, err, sizeof err);
    CHECK(v != NULL, "format vocab: %s", err);
    if (!v) return;
    CHECK(unimed_vocab_size(v) == 8, "size %d", unimed_vocab_size(v));
    CHECK(um_vocab_lookup(v, "[UNK]", 5) == 1, "CRLF");
    CHECK(um_vocab_lookup(v, "[CLS]", 5) == 2, "trailing spaces trimmed");
    CHECK(um_vocab_lookup(v, "lung", 4) == 5, "duplicate keeps the last id");
    CHECK(um_vocab_lookup(v, "x", 1) == 7, "last line without newline");
    CHECK(um_vocab_lookup(v, "lun", 3) == -1, "absent");
    CHECK(strcmp(um_vocab_token(v, 6), "##s") == 0, "token text");
    CHECK(um_vocab_token(v, 8) == NULL && um_vocab_token(v, -1) == NULL, "out of range");
    CHECK_TOK(v, "Lungs x", 16, "[CLS] lung ##s x [SEP]");
    unimed_vocab_free(v);
}

static void unit_behaviour(const char *tmp)
{
    char err[512], path[1024];
    snprintf(path, sizeof path, "%s/behaviour_vocab.txt", tmp);
    /* Cases the JavaScript reference gets wrong or cannot show: they follow
     * HF's Rust tokenizers (BiomedBERT's fast tokenizer). */
    CHECK(write_file(path,
                     "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nb\n##b\n\xf0\xa0\x80\x80\n"
                     "\xce\xb1\xcf\x83\n\xce\xb1\xcf\x82\nab\nx\n##x\ny\n.\nun\n##aff\n##able\n"),
          "write");
    unimed_vocab *v = unimed_vocab_load(path, err, sizeof err);
    CHECK(v != NULL, "behaviour vocab: %s", err);
    if (!v) return;
    /* supplementary-plane CJK ideographs are spaced (U+20000) */
    CHECK_TOK(v, "a\xf0\xa0\x80\x80" "b", 16, "[CLS] a \xf0\xa0\x80\x80 b [SEP]");
    /* HF's range starts at U+2B920: U+2B820 is not spaced */
    CHECK_TOK(v, "a\xf0\xab\xa0\xa0", 16, "[CLS] [UNK] [SEP]");
    /* lower-casing is per character: final capital sigma becomes sigma */
    CHECK_TOK(v, "\xce\x91\xce\xa3", 16, "[CLS] \xce\xb1\xcf\x83 [SEP]");
    CHECK_TOK(v, "\xce\xb1\xcf\x82", 16, "[CLS] \xce\xb1\xcf\x82 [SEP]");
    /* WordPiece greedy longest match */
    CHECK_TOK(v, "unaffable", 16, "[CLS] un ##aff ##able [SEP]");
    CHECK_TOK(v, "unaffablex", 16, "[CLS] un ##aff ##able ##x [SEP]");
    CHECK_TOK(v, "unaffabley", 16, "[CLS] [UNK] [SEP]");
    CHECK_TOK(v, "abb", 16, "[CLS] ab ##b [SEP]");
    /* truncation keeps [SEP] last */
    CHECK_TOK(v, "a b a b a b", 5, "[CLS] a b a [SEP]");
    CHECK_TOK(v, "a b", 2, "[CLS] [SEP]");
    CHECK_TOK(v, "[MASK]", 2, "[CLS] [SEP]");
    CHECK_TOK(v, "a [MASK] b", 4, "[CLS] a [MASK] [SEP]");
    int ids[4];
    CHECK(um_tokenize(v, "a", 1, ids, err, sizeof err) == -1, "max_len 1 must fail");
    CHECK(um_tokenize(v, NULL, 4, ids, err, sizeof err) == 2, "NULL text is empty");
    /* special tokens are matched case-sensitively on the raw text */
    CHECK_TOK(v, "a[MASK]b [mask] [CLS]", 32, "[CLS] a [MASK] b [UNK] [UNK] [UNK] [CLS] [SEP]");
    /* 100 characters is a word, 101 is [UNK] (counted after normalization) */
    char w[512];
    memset(w, 'x', 100);
    w[100] = '\0';
    w[0] = 'y';
    const char *got = tok_str(v, w, 200);
    CHECK(strncmp(got, "[CLS] y ##x ##x", 15) == 0, "100-char word: %.40s", got);
    w[100] = 'x';
    w[101] = '\0';
    CHECK_TOK(v, w, 200, "[CLS] [UNK] [SEP]");
    /* 101 x "e + combining acute": 202 code points, 101 after normalization */
    char *acc = malloc(101 * 3 + 1), *p = acc;
    for (int k = 0; k < 101; k++) { *p++ = 'x'; *p++ = (char)0xCC; *p++ = (char)0x81; }
    *p = '\0';
    CHECK_TOK(v, acc, 200, "[CLS] [UNK] [SEP]");
    acc[100 * 3] = '\0';
    got = tok_str(v, acc, 200);
    CHECK(strncmp(got, "[CLS] x ##x ##x", 15) == 0, "100 accented chars: %.40s", got);
    free(acc);
    unimed_vocab_free(v);
}

static void unit_full_vocab(const char *vocab_path)
{
    char err[512];
    unimed_vocab *v = unimed_vocab_load(vocab_path, err, sizeof err);
    CHECK(v != NULL, "%s", err);
    if (!v) return;
    int n = unimed_vocab_size(v), bad = 0;
    for (int id = 0; id < n; id++) {
        const char *t = um_vocab_token(v, id);
        if (!t || um_vocab_lookup(v, t, strlen(t)) != id) bad++;
    }
    CHECK(bad == 0, "%d of %d tokens do not look up to their own id", bad, n);
    CHECK(um_vocab_lookup(v, "[CLS]", 5) == 101 && um_vocab_lookup(v, "[SEP]", 5) == 102,
          "full vocab must use the BERT layout");
    CHECK(um_vocab_lookup(v, "no-such-token", 13) == -1, "absent token");
    CHECK(um_vocab_lookup(v, "", 0) == -1, "empty token");

    /* invalid UTF-8 never crashes and cleans to valid UTF-8 */
    static const char *const bad_inputs[] = {
        "\xff", "\xc3", "\xe2\x82", "\xf0\x9f\x98", "\xed\xa0\x80", "\xc0\x80", "\xf4\x90\x80\x80",
        "lung\xff\xfe\xfd", "&amp\xff;", "&#x3\xff;", "[MASK\xff]", "\x80\x80\x80\x80\x80", "\xf8\x88\x80\x80\x80",
        "pneumonia \xe4\xb8 \xc3\xa9\xc3", "&\xc3", "&#\xe2\x82", "x\xef\xbf\xbdy",
    };
    int ids[256];
    for (size_t k = 0; k < sizeof bad_inputs / sizeof bad_inputs[0]; k++) {
        char *c = um_text_clean(bad_inputs[k]);
        CHECK(c && valid_utf8(c), "clean of invalid input %zu is not valid UTF-8", k);
        free(c);
        int m = um_tokenize(v, bad_inputs[k], 256, ids, err, sizeof err);
        CHECK(m >= 2 && ids[0] == 101 && ids[m - 1] == 102, "invalid input %zu: %d", k, m);
    }
    /* bad bytes are U+FFFD, which the tokenizer drops: same as without them */
    int a[64], b[64];
    int na = um_tokenize(v, "pneu\xffmonia \xc3(lung)\xe2\x82", 64, a, err, sizeof err);
    int nb = um_tokenize(v, "pneumonia (lung)", 64, b, err, sizeof err);
    CHECK(na == nb && memcmp(a, b, sizeof(int) * (size_t)(na > 0 ? na : 0)) == 0, "bad bytes are dropped");

    /* random bytes and huge inputs */
    uint32_t seed = 12345;
    size_t big = 4u << 20;
    char *buf = malloc(big + 1);
    for (size_t i = 0; i < big; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (char)((seed >> 16) & 0xFF);
        if (buf[i] == 0) buf[i] = ' ';
    }
    buf[big] = '\0';
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char *c = um_text_clean(buf);
    CHECK(c && valid_utf8(c), "random bytes clean to valid UTF-8");
    free(c);
    int m = um_tokenize(v, buf, 256, ids, err, sizeof err);
    CHECK(m >= 2 && m <= 256 && ids[m - 1] == 102, "random bytes tokenize (%d)", m);
    for (int i = 0; i < m; i++) CHECK(ids[i] >= 0 && ids[i] < n, "id in range");
    static const char *const fills[] = {"a", "&amp;", "[MASK]", " ", "\xe8\x83\xb8", "&#x3b1;", "\xcc\x81", "&"};
    for (size_t k = 0; k < sizeof fills / sizeof fills[0]; k++) {
        size_t fl = strlen(fills[k]);
        size_t reps = big / fl;
        for (size_t r = 0; r < reps; r++) memcpy(buf + r * fl, fills[k], fl);
        buf[reps * fl] = '\0';
        m = um_tokenize(v, buf, 256, ids, err, sizeof err);
        CHECK(m >= 2 && m <= 256 && ids[0] == 101 && ids[m - 1] == 102, "huge input '%s' (%d)", fills[k], m);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("huge inputs: %.0f ms for 9 texts of 4 MiB\n",
           1e3 * (double)(t1.tv_sec - t0.tv_sec) + 1e-6 * (double)(t1.tv_nsec - t0.tv_nsec));
    free(buf);
    unimed_vocab_free(v);
}

static int run_unit(const char *vocab_path, const char *clean_expected, const char *tmp)
{
    mkdir(tmp, 0777);
    unit_clean_cases(clean_expected);
    unit_vocab_errors(tmp);
    unit_vocab_format(tmp);
    unit_behaviour(tmp);
    unit_full_vocab(vocab_path);
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "parity") == 0)
        return run_parity(argv[2], atoi(argv[3]), argv[4]);
    if (argc == 5 && strcmp(argv[1], "unit") == 0)
        return run_unit(argv[2], argv[3], argv[4]);
    fprintf(stderr,
            "usage: %s parity VOCAB CONTEXT REF.jsonl\n"
            "       %s unit VOCAB CLEAN_EXPECTED.jsonl TMPDIR\n",
            argv[0], argv[0]);
    return 2;
}
