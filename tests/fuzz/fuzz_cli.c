/* fuzz_cli.c - libFuzzer target: kosmosg-generate's option parser (tools/cli_args.c).
 *
 * Input: [msg size byte] then NUL-separated arguments (argv[0] is fixed). Invariants:
 * the parse is deterministic (no hidden state: parsed twice, the same verdict and values);
 * a refusal says why in a NUL-terminated message that fits its buffer, and a shortened
 * message is a prefix + "..." + suffix of the full one; an accepted command line has a model,
 * a prompt and an output, every value in its documented range, and an -o pattern whose every
 * image path expands (without printf) to what an independent expansion gives. */
#include <math.h>

#include "cli_args.h"
#include "fuzz_common.h"

#define MAX_ARGS 48

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* The reference expansion: %% -> %, %d -> index, anything else copied. */
static size_t expand(const char *pat, int index, char *buf, size_t size)
{
    char num[16];
    size_t o = 0;
    snprintf(num, sizeof num, "%d", index);
    for (const char *p = pat; *p; p++) {
        if (p[0] == '%' && p[1] == 'd') {
            for (const char *q = num; *q; q++)
                if (o + 1 < size)
                    buf[o++] = *q;
            p++;
        } else {
            if (p[0] == '%' && p[1] == '%')
                p++;
            if (o + 1 < size)
                buf[o++] = *p;
        }
    }
    buf[o] = '\0';
    return o;
}

static void check_accepted(const kg_cli_args *a)
{
    const kg_params *p = &a->params;
    char got[KG_CLI_PATH_MAX], want[KG_CLI_PATH_MAX + 64], msg[256];
    FUZZ_REQUIRE(a->model && a->prompt && a->out);
    FUZZ_REQUIRE(a->model[0] && a->out[0]);
    FUZZ_REQUIRE(p->steps >= 1 && p->steps <= KG_CLI_MAX_STEPS);
    FUZZ_REQUIRE(isfinite(p->guidance_scale) && p->guidance_scale >= 0.0f &&
                 p->guidance_scale <= 100.0f);
    FUZZ_REQUIRE(p->seed >= -1);
    FUZZ_REQUIRE(p->num_images >= 1 && p->num_images <= KG_CLI_MAX_NUM_IMAGES);
    FUZZ_REQUIRE(p->width >= 8 && p->width <= KG_CLI_MAX_SIZE && p->width % 8 == 0);
    FUZZ_REQUIRE(p->height >= 8 && p->height <= KG_CLI_MAX_SIZE && p->height % 8 == 0);
    FUZZ_REQUIRE(a->mopt.n_threads == 0 ||
                 (a->mopt.n_threads >= 1 && a->mopt.n_threads <= KG_CLI_MAX_THREADS));
    FUZZ_REQUIRE(a->n_inputs >= 0 && a->n_inputs <= KG_CLI_MAX_IMAGES);
    for (int i = 0; i < a->n_inputs; i++)
        FUZZ_REQUIRE(a->inputs[i] && a->inputs[i][0]);
    FUZZ_REQUIRE(kg_cli_check_pattern(a->out, p->num_images, msg, sizeof msg) == 0);
    for (int i = 0; i < p->num_images; i++) {
        size_t n = expand(a->out, i, want, sizeof want);
        FUZZ_REQUIRE(n < KG_CLI_PATH_MAX);
        FUZZ_REQUIRE(kg_cli_output_path(a->out, i, got, sizeof got) == 0);
        FUZZ_REQUIRE(strcmp(got, want) == 0);
        /* distinct images never share a path */
        if (i == 1) {
            char first[KG_CLI_PATH_MAX];
            FUZZ_REQUIRE(kg_cli_output_path(a->out, 0, first, sizeof first) == 0);
            FUZZ_REQUIRE(strcmp(first, got) != 0);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy, *argv[MAX_ARGS + 1];
    int argc = 1;
    size_t small;
    kg_cli_args a, b;
    kg_cli_result r, r2;
    char msg[1024], msg2[1024], *short_msg;

    if (size < 1)
        return 0;
    small = 1 + data[0] % 96;
    data++;
    size--;
    /* exact-size argument strings: a read past one is an ASan report */
    copy = malloc(size + 1);
    FUZZ_REQUIRE(copy != NULL);
    memcpy(copy, data, size);
    copy[size] = '\0';
    argv[0] = "kosmosg-generate";
    for (size_t i = 0, start = 0; i <= size && argc < MAX_ARGS; i++) {
        if (i == size || copy[i] == '\0') {
            argv[argc++] = copy + start;
            start = i + 1;
        }
    }
    argv[argc] = NULL;

    kg_cli_args_init(&a);
    r = kg_cli_parse(&a, argc, argv, msg, sizeof msg);
    FUZZ_REQUIRE(r == KG_CLI_RUN || r == KG_CLI_HELP || r == KG_CLI_ERROR);
    FUZZ_REQUIRE(memchr(msg, '\0', sizeof msg) != NULL);
    if (r == KG_CLI_ERROR)
        FUZZ_REQUIRE(msg[0] != '\0');
    if (r == KG_CLI_RUN)
        check_accepted(&a);

    /* no hidden state: the same verdict and values a second time */
    kg_cli_args_init(&b);
    r2 = kg_cli_parse(&b, argc, argv, msg2, sizeof msg2);
    FUZZ_REQUIRE(r2 == r && strcmp(msg, msg2) == 0);
    FUZZ_REQUIRE(memcmp(&a, &b, sizeof a) == 0);

    /* a small message buffer: shortened in the middle, never overflowed */
    short_msg = malloc(small);
    FUZZ_REQUIRE(short_msg != NULL);
    kg_cli_args_init(&b);
    r2 = kg_cli_parse(&b, argc, argv, short_msg, small);
    FUZZ_REQUIRE(r2 == r);
    FUZZ_REQUIRE(memchr(short_msg, '\0', small) != NULL);
    if (strlen(msg) < small) {
        FUZZ_REQUIRE(strcmp(msg, short_msg) == 0);
    } else if (strlen(msg) < sizeof msg - 1 && strlen(short_msg) > 0) {
        /* some "..." in it splits it into a prefix and a suffix of the full message */
        size_t sl = strlen(short_msg), ml = strlen(msg);
        int found = 0;
        FUZZ_REQUIRE(sl < small);
        for (const char *d = strstr(short_msg, "..."); d && !found; d = strstr(d + 1, "...")) {
            size_t head = (size_t)(d - short_msg), tail = sl - head - 3;
            found = tail <= ml && strncmp(msg, short_msg, head) == 0 &&
                    strcmp(msg + ml - tail, d + 3) == 0;
        }
        FUZZ_REQUIRE(found);
    }
    free(short_msg);
    free(copy);
    return 0;
}
