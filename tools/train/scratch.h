/* The model directories unimed-train writes: config.json from a preset or
 * a config file and model.safetensors with random initial weights for
 * training from scratch (vocab.txt is built with unimed_train.h's
 * vocabulary builder), and the model name / version in config.json. */
#ifndef UNIMED_TRAIN_SCRATCH_H
#define UNIMED_TRAIN_SCRATCH_H

#include <stddef.h>
#include <stdint.h>

/* Writes DIR/config.json: preset "small" / "tiny" or a JSON file of
 * config.json's shape (vocab_size, pad_token_id and absent defaults are
 * filled in). vocab_size / pad_id: of DIR/vocab.txt. */
int ut_write_config(const char *dir, const char *preset_or_file, int vocab_size, int pad_id,
                    const char *model_name, const char *model_version, char *err,
                    size_t errlen);
/* Rewrites DIR/config.json with model_name / model_version (either may be
 * NULL: kept); 0 or -1. */
int ut_patch_config(const char *dir, const char *name, const char *version);
/* Writes DIR/model.safetensors with random weights for DIR/config.json
 * (OpenCLIP-style init for the image tower, BERT-style for the text tower;
 * LayerNorms 1/0, biases 0, logit_scale ln(1/0.07)), from seed. */
int ut_write_random_weights(const char *dir, uint64_t seed, char *err, size_t errlen);

#endif
