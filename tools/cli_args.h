/* cli_args.h - kosmosg-generate's command line, parsed by a pure function.
 *
 * kg_cli_parse() never prints, exits or keeps state between calls (no getopt globals), so the
 * parser is a unit test and a libFuzzer target (tests/fuzz/fuzz_cli.c) as well as the CLI's.
 * Every value is checked whole: integers and floats must be consumed entirely, in range, without
 * truncation or saturation; the output pattern understands only one %d and %%, and is expanded
 * by kg_cli_output_path(), never by a printf-family function. */
#ifndef KG_CLI_ARGS_H
#define KG_CLI_ARGS_H

#include <stddef.h>
#include <stdio.h>

#include "kosmosg.h"

/* the engine's limits (kosmosg.h), and the CLI's own thread bound */
#define KG_CLI_MAX_IMAGES KG_MAX_IMAGES
#define KG_CLI_MAX_THREADS 1024
#define KG_CLI_MAX_NUM_IMAGES KG_MAX_OUTPUTS
#define KG_CLI_MAX_STEPS KG_STEPS_MAX
#define KG_CLI_MAX_LORAS 8
#define KG_CLI_MAX_SIZE KG_SIZE_MAX
#define KG_CLI_MAX_CONTROLS KG_MAX_CONTROLS
/* Longest output path after %d is replaced (PATH_MAX on Linux, NUL included). */
#define KG_CLI_PATH_MAX 4096

typedef struct kg_cli_args {
    /* strings point into argv */
    const char *model, *prompt, *negative, *out, *latents, *dump;
    const char *inputs[KG_CLI_MAX_IMAGES];
    int n_inputs;
    kg_params params; /* prompt/images/loras are left to the caller */
    /* --lora FILE[:SCALE] in order (values, not pointers: two parses compare equal) */
    char lora_paths[KG_CLI_MAX_LORAS][KG_CLI_PATH_MAX];
    float lora_scales[KG_CLI_MAX_LORAS];
    int n_loras;
    /* --control IMAGE, --controlnet FILE, --control-scale S in order: one ControlNet and
     * scale per control map, or a single one for all; --control-start/--control-end for all */
    const char *controls[KG_CLI_MAX_CONTROLS];
    int n_controls;
    const char *controlnets[KG_CLI_MAX_CONTROLS];
    int n_controlnets;
    float control_scales[KG_CLI_MAX_CONTROLS];
    int n_control_scales;
    float control_start, control_end;
    int control_canny; /* --control-canny LOW:HIGH given */
    float canny_low, canny_high;
    kg_model_options mopt;
} kg_cli_args;

typedef enum kg_cli_result {
    KG_CLI_RUN = 0, /* a complete request: model, prompt and output given, all valid */
    KG_CLI_HELP,    /* -h / --help */
    KG_CLI_ERROR,   /* msg says which option and value, and what is expected */
} kg_cli_result;

/* Defaults: kg_params_init and kg_model_options_init. */
void kg_cli_args_init(kg_cli_args *a);

/* Parses argv[1..argc-1] into a, which kg_cli_args_init has set up. msg (msg_size > 0) receives
 * the reason on KG_CLI_ERROR; a message longer than msg_size is shortened in its middle. */
kg_cli_result kg_cli_parse(kg_cli_args *a, int argc, char *const *argv, char *msg, size_t msg_size);

/* Checks an -o pattern for n images: at most one %d, %% for a literal %, no other conversion,
 * a %d when n > 1, and every expanded path shorter than KG_CLI_PATH_MAX. 0 or -1 with msg set. */
int kg_cli_check_pattern(const char *pattern, int n, char *msg, size_t msg_size);

/* The output path of image `index` (pattern checked by kg_cli_check_pattern): %d replaced by
 * the decimal index, %% by %. 0, or -1 when it does not fit in size bytes. */
int kg_cli_output_path(const char *pattern, int index, char *buf, size_t size);

void kg_cli_usage(FILE *f);

#endif
