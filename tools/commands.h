/* Subcommands of the `unimed` CLI. Each returns the process exit code:
 * 0 success, 1 bad input, 2 bad usage. */
#ifndef UNIMED_COMMANDS_H
#define UNIMED_COMMANDS_H

/* Model commands (cmd_model.c). */
int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_embed_text(int argc, char **argv);
int cmd_embed_image(int argc, char **argv);
int cmd_zero_shot(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* DICOM commands (cmd_dicom.c). */
int cmd_inspect(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
int cmd_analyze(int argc, char **argv); /* cmd_analyze.c */
int cmd_read_sr(int argc, char **argv); /* cmd_analyze.c */
int cmd_evaluate(int argc, char **argv); /* cmd_evaluate.c */

#endif
