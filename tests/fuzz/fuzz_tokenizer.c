/* libFuzzer target for the text cleaning and the WordPiece tokenizer.
 *
 * The vocabulary is loaded once: from the file named by $UNIMED_FUZZ_VOCAB,
 * or else a small built-in one written to a temporary file. Each input is
 * taken as raw bytes (any of them invalid UTF-8; the first NUL ends it, as
 * for any C string), its first byte also picks max_len. Checked: cleaning
 * returns valid UTF-8, tokenizing returns [CLS] ... [SEP] with at most
 * max_len ids, all inside the vocabulary, and nothing crashes or leaks.
 * (With UNIMED_FUZZ the whole build carries coverage instrumentation.) */
#include "tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unimed_vocab *fuzz_vocab;

static const char builtin_vocab[] =
    "[PAD]\n[unused0]\n[SEP]\n[UNK]\n[CLS]\n[MASK]\n"
    "!\n\"\n#\n$\n%\n&\n'\n(\n)\n*\n+\n,\n-\n.\n/\n0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n:\n;\n<\n=\n>\n?\n@\n[\n\\\n]\n^\n_\n`\n"
    "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\no\np\nq\nr\ns\nt\nu\nv\nw\nx\ny\nz\n{\n|\n}\n~\n"
    "##a\n##b\n##c\n##d\n##e\n##f\n##g\n##h\n##i\n##l\n##m\n##n\n##o\n##r\n##s\n##t\n##u\n##y\n"
    "##0\n##1\n##2\n##5\n"
    "the\nof\nlung\n##s\npneumonia\nchest\nx\nray\nct\nmri\nscan\nnodule\n##ule\neffusion\npleural\n"
    "right\nleft\nlower\nupper\nlobe\nno\nacute\n##itis\n##oma\n##ectomy\ncardio\n##megaly\n"
    "\xce\xb1\n\xce\xb2\n\xce\xbc\n\xcf\x83\n\xc2\xb0\n\xc3\x9f\n\xe8\x83\xb8\n\xe9\x83\xa8\n\xe8\x82\xba\n"
    "\xe1\x84\x92\n##\xe1\x85\xa1\n##\xe1\x86\xab\n\xe3\x82\xb1\n\xf0\xa0\x80\x80\n";

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[512];
    const char *path = getenv("UNIMED_FUZZ_VOCAB");
    if (path && *path) {
        fuzz_vocab = unimed_vocab_load(path, err, sizeof err);
    } else {
        char tmpl[] = "/tmp/unimed_fuzz_vocab_XXXXXX";
        int fd = mkstemp(tmpl);
        if (fd < 0) { perror("mkstemp"); abort(); }
        size_t len = sizeof builtin_vocab - 1;
        if (write(fd, builtin_vocab, len) != (ssize_t)len) { perror("write"); abort(); }
        close(fd);
        fuzz_vocab = unimed_vocab_load(tmpl, err, sizeof err);
        unlink(tmpl);
    }
    if (!fuzz_vocab) { fprintf(stderr, "fuzz_tokenizer: %s\n", err); abort(); }
    return 0;
}

/* Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, <= U+10FFFF),
 * written here independently of the tokenizer's own decoder. */
static int is_valid_utf8(const unsigned char *u)
{
    while (*u) {
        unsigned c = u[0];
        int n;
        uint32_t cp, min;
        if (c < 0x80) { u++; continue; }
        else if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; min = 0x10000; }
        else return 0;
        for (int i = 1; i <= n; i++) {
            if ((u[i] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (u[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        u += n + 1;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20)) return 0;
    int max_len = size ? 2 + data[0] % 300 : 16;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    char *clean = um_text_clean(text);
    if (!clean) abort();
    if (!is_valid_utf8((const unsigned char *)clean)) abort();
    /* cleaning leaves no leading/trailing blank and no double blank */
    size_t cl = strlen(clean);
    if (cl && (clean[0] == ' ' || clean[cl - 1] == ' ')) abort();
    if (strstr(clean, "  ")) abort();

    int *ids = malloc(sizeof(int) * (size_t)max_len);
    char err[256];
    int n = um_tokenize(fuzz_vocab, text, max_len, ids, err, sizeof err);
    if (n < 2 || n > max_len) abort();
    if (ids[0] != um_vocab_lookup(fuzz_vocab, "[CLS]", 5)) abort();
    if (ids[n - 1] != um_vocab_lookup(fuzz_vocab, "[SEP]", 5)) abort();
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= unimed_vocab_size(fuzz_vocab)) abort();
    /* tokenizing the cleaned text again gives the same ids only when the
     * second cleaning changes nothing; at least it must not crash */
    int n2 = um_tokenize(fuzz_vocab, clean, max_len, ids, err, sizeof err);
    if (n2 < 2) abort();
    free(ids);
    free(clean);
    free(text);
    return 0;
}
