/* fuzz_common.h - helpers shared by the libFuzzer targets (built by run-fuzz.sh).
 *
 * A broken invariant aborts, which libFuzzer reports as a finding with the
 * input kept. Golden files (the real tokenizer) are located through
 * $KG_GOLDEN, which run-fuzz.sh always sets. */
#ifndef KG_FUZZ_COMMON_H
#define KG_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_REQUIRE(cond)                                                                     \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* A refused input must say why. */
#define FUZZ_REFUSED(s, err) FUZZ_REQUIRE((s) != KG_OK && (err).code == (s) && (err).msg[0] != '\0')

/* Reads a whole file, or exits: a missing golden file is a setup error, not a finding. */
static inline void *fuzz_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        !(buf = malloc((size_t)n + 1)) || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "fuzz setup: cannot read %s\n", path);
        exit(2);
    }
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* $KG_GOLDEN/<rel>, read whole. */
static inline void *fuzz_read_golden(const char *rel, size_t *len)
{
    char path[4096];
    const char *g = getenv("KG_GOLDEN");
    if (!g || !*g) {
        fprintf(stderr, "fuzz setup: KG_GOLDEN is not set\n");
        exit(2);
    }
    snprintf(path, sizeof path, "%s/%s", g, rel);
    return fuzz_read_file(path, len);
}

#endif
