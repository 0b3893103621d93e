/* unimed — command-line front end of the model core and the DICOM library.
 * JSON lines on stdout, errors on stderr; exit 0 success, 1 bad input,
 * 2 bad usage. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

static const struct {
  const char *name;
  int (*run)(int, char **);
  const char *summary;
} commands[] = {
    {"info", cmd_info, "describe a model directory"},
    {"tokenize", cmd_tokenize, "clean and tokenise texts as the text tower sees them"},
    {"embed-text", cmd_embed_text, "L2-normalised text embeddings"},
    {"embed-image", cmd_embed_image, "L2-normalised image embeddings (tensors or DICOM)"},
    {"zero-shot", cmd_zero_shot, "zero-shot probabilities of an image over prompts"},
    {"bench", cmd_bench, "time the towers on this CPU"},
#ifdef UNIMED_HAVE_DICOM
    {"inspect", cmd_inspect, "describe DICOM files"},
    {"preprocess", cmd_preprocess, "write the model input tensor of a DICOM frame"},
    {"analyze", cmd_analyze, "a study's findings against label sets, and its DICOM SR"},
    {"read-sr", cmd_read_sr, "the findings of TID 1500 Structured Reports"},
#ifdef UNIMED_HAVE_TRAINSET
    {"evaluate", cmd_evaluate, "zero-shot metrics on labelled study archives"},
#endif
#endif
};

static void usage(FILE *out) {
  fprintf(out,
          "usage: unimed COMMAND [OPTIONS]\n\n"
          "UniMed-CLIP on the CPU: embeddings, zero-shot scoring and DICOM input.\n\n"
          "commands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
  fprintf(out,
          "\nRun 'unimed COMMAND --help' for a command's options.\n"
          "Output: one JSON object per line on stdout; errors on stderr.\n"
          "Exit status: 0 success, 1 bad input, 2 bad usage.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "unimed: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
