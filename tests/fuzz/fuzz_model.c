/* fuzz_model.c - libFuzzer target: kg_model_open on a fuzzed model file.
 *
 * Two kinds of input:
 *   - starting with '{': a safetensors JSON header. The file written is
 *     <u64 length><input><the data region of the tiny model ($KG_TINY_MODEL)>,
 *     so mutations of the metadata configs, tensor names, dtypes, shapes and
 *     offsets (the tokenizer's bytes included) reach the config readers, the
 *     strict loader and the SentencePiece reader with real weights behind;
 *   - anything else: the file's bytes as they are.
 * kg_model_open reads a path, so each input goes to a temporary file (in
 * /dev/shm when there is one). A refusal must leave *out NULL and say why;
 * ASan/LSan catch bad reads and anything a failed open leaves behind. */
#include <unistd.h>

#include "fuzz_common.h"
#include "kosmosg.h"

static uint8_t *tiny_data; /* the tiny model's data region */
static size_t tiny_data_len;
static char path[4096];

static void remove_file(void)
{
    unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *tiny = getenv("KG_TINY_MODEL");
    const char *dirs[] = {"/dev/shm", getenv("TMPDIR"), "/tmp"};
    uint8_t *file;
    size_t len;
    uint64_t hdr;
    int fd = -1;
    (void)argc;
    (void)argv;

    if (!tiny || !*tiny) {
        fprintf(stderr, "fuzz setup: KG_TINY_MODEL is not set\n");
        exit(2);
    }
    file = fuzz_read_file(tiny, &len);
    memcpy(&hdr, file, 8);
    if (len < 8 || hdr > len - 8) {
        fprintf(stderr, "fuzz setup: %s is not a safetensors file\n", tiny);
        exit(2);
    }
    tiny_data_len = len - 8 - (size_t)hdr;
    tiny_data = malloc(tiny_data_len ? tiny_data_len : 1);
    memcpy(tiny_data, file + 8 + hdr, tiny_data_len);
    free(file);

    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0] && fd < 0; i++) {
        if (!dirs[i] || access(dirs[i], W_OK) != 0)
            continue;
        snprintf(path, sizeof path, "%s/kg-fuzz-model-XXXXXX", dirs[i]);
        fd = mkstemp(path);
    }
    if (fd < 0) {
        fprintf(stderr, "fuzz setup: no writable temporary folder\n");
        exit(2);
    }
    close(fd);
    atexit(remove_file);
    return 0;
}

static void write_all(FILE *f, const void *p, size_t n)
{
    FUZZ_REQUIRE(n == 0 || fwrite(p, 1, n, f) == n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kg_model *m = (kg_model *)&m;
    kg_model_options o;
    kg_error err = {0};
    kg_status s;
    FILE *f = fopen(path, "wb");

    FUZZ_REQUIRE(f != NULL);
    if (size > 0 && data[0] == '{') {
        uint64_t n = size;
        uint8_t le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (uint8_t)(n >> (8 * i));
        write_all(f, le, 8);
        write_all(f, data, size);
        write_all(f, tiny_data, tiny_data_len);
    } else {
        write_all(f, data, size);
    }
    FUZZ_REQUIRE(fclose(f) == 0);

    kg_model_options_init(&o);
    o.backend = KG_BACKEND_CPU;
    o.n_threads = 1;
    s = kg_model_open(&m, path, &o, &err);
    if (s == KG_OK) {
        kg_session *ss = NULL;
        FUZZ_REQUIRE(m != NULL && kg_model_backend(m) == KG_BACKEND_CPU);
        s = kg_session_new(&ss, m, &err);
        FUZZ_REQUIRE(s == KG_OK && ss != NULL);
        kg_session_free(ss);
        kg_model_close(m);
    } else {
        FUZZ_REFUSED(s, err);
        FUZZ_REQUIRE(m == NULL);
    }
    return 0;
}
