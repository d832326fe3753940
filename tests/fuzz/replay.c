/* replay.c - runs a fuzz target's LLVMFuzzerTestOneInput on files, without libFuzzer.
 *
 * Linked with each fuzz_<target>.c into an ordinary test executable, so every seed and
 * every past finding in tests/fuzz/corpus_<target>/ is replayed by the normal test suite
 * (and under ASan/UBSan by scripts/sanitize.sh): a finding that comes back aborts.
 *
 * usage: fuzz-replay-<target> DIR_OR_FILE... */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"

static int run_file(const char *path)
{
    size_t len;
    uint8_t *data = fuzz_read_file(path, &len);
    /* an exact-size copy: the target must not read past the input */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        fprintf(stderr, "replay: no memory for %s\n", path);
        exit(2);
    }
    memcpy(exact, data, len);
    free(data);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 1;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int count = 0;
    if (!d) {
        fprintf(stderr, "replay: cannot open %s\n", dir);
        exit(2);
    }
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            names = realloc(names, cap * sizeof *names);
        }
        names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        sprintf(names[n++], "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    for (size_t i = 0; i < n; i++) {
        count += run_file(names[i]);
        free(names[i]);
    }
    free(names);
    return count;
}

int main(int argc, char **argv)
{
    int count = 0;
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
            count += run_dir(argv[i]);
        else
            count += run_file(argv[i]);
    }
    printf("replayed %d inputs: no invariant broken\n", count);
    return count > 0 ? 0 : 1;
}
