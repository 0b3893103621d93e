/* A new model directory for training from scratch: config.json from a
 * preset or a config file, vocab.txt built from the captions (or copied),
 * and model.safetensors with random initial weights. */
#ifndef UNIMED_TRAIN_SCRATCH_H
#define UNIMED_TRAIN_SCRATCH_H

#include <stddef.h>
#include <stdint.h>

/* A vocabulary from texts: [PAD] [UNK] [CLS] [SEP] [MASK], every character
 * seen (and a-z, 0-9) alone and as "##x", then the whole words (lower-cased,
 * split at spaces and punctuation as BERT's basic tokenizer does) by
 * frequency, at most max_size lines in all. */
typedef struct ut_vocab_builder ut_vocab_builder;
ut_vocab_builder *ut_vocab_builder_new(void);
void ut_vocab_builder_add(void *builder, const char *text); /* a ut_caption_corpus callback */
/* Writes the vocabulary; returns the number of lines, or -1 with err. */
int ut_vocab_builder_write(ut_vocab_builder *b, const char *path, int max_size, char *err,
                           size_t errlen);
void ut_vocab_builder_free(ut_vocab_builder *b);

/* Writes DIR/config.json: preset "small" / "tiny" or a JSON file of
 * config.json's shape (vocab_size, pad_token_id and absent defaults are
 * filled in). vocab_size / pad_id: of DIR/vocab.txt. */
int ut_write_config(const char *dir, const char *preset_or_file, int vocab_size, int pad_id,
                    const char *model_name, const char *model_version, char *err,
                    size_t errlen);
/* Writes DIR/model.safetensors with random weights for DIR/config.json
 * (OpenCLIP-style init for the image tower, BERT-style for the text tower;
 * LayerNorms 1/0, biases 0, logit_scale ln(1/0.07)), from seed. */
int ut_write_random_weights(const char *dir, uint64_t seed, char *err, size_t errlen);

#endif
