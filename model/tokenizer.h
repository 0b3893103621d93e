/* Internal to model/: vocabulary, UniMed text cleaning and the BERT uncased
 * WordPiece tokenizer. The public API lives in unimed_model.h (with a
 * model) and unimed_train.h (with a vocabulary alone). */
#ifndef UNIMED_TOKENIZER_H
#define UNIMED_TOKENIZER_H

#include <stddef.h>

#include "unimed_train.h"

/* The vocabulary type and unimed_vocab_load / _free / _size / _tokenize are
 * public (unimed_train.h): a BERT vocab.txt, one token per line, id = line
 * number; unimed_vocab_load's errors name the file. */

/* Id of the token (bytes tok[0..len)), or -1 when absent. */
int um_vocab_lookup(const unimed_vocab *v, const char *tok, size_t len);
/* Token text for an id, or NULL when out of range. */
const char *um_vocab_token(const unimed_vocab *v, int id);

/* UniMed's cleaning before tokenising: HTML entities unescaped twice
 * (numeric and the common named ones), whitespace runs collapsed to one
 * space, trimmed. Returns a malloc'd string (caller frees) or NULL on OOM. */
char *um_text_clean(const char *text);

/* Cleans `text`, then tokenises as HuggingFace's uncased BertTokenizer:
 * writes [CLS] pieces... [SEP] into ids (at most max_len ids, truncating the
 * pieces so that [SEP] is kept) and returns the count (>= 2), or -1 with a
 * message in err ([CLS]/[SEP]/[UNK] missing from the vocab, OOM). */
int um_tokenize(const unimed_vocab *v, const char *text, int max_len, int *ids,
                char *err, size_t errlen);

#endif
