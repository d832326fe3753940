/* test_model_file.c - a loaded model does not depend on its file (tiny model, CPU backend).
 *
 * A copy of $KG_TINY_MODEL is opened, then changed on disk while a session generates: from the
 * progress callback after the first denoising step (so mid-generation, deterministically) the
 * copy is truncated to 0 bytes, or overwritten in place with zeros, or replaced by a different
 * file under the same name. Each generation must finish (no SIGBUS, which kills this process
 * when weights are read through the file's mapping) with bytes identical to a reference
 * generation on an untouched file (the weights do not silently change), and the model keeps
 * working for a second generation. The safetensors reader's own pread path is checked too: a
 * tensor of a file truncated after kg_st_open gives KG_ERR_IO naming it, and an in-place
 * rewrite is reported by kg_st_check_unchanged. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kosmosg.h"
#include "safetensors.h"
#include "testutil.h"

typedef enum change { CHANGE_NONE, CHANGE_TRUNCATE, CHANGE_ZERO, CHANGE_REPLACE } change;

static const char *change_names[] = {"none", "truncate to 0 bytes", "overwrite in place with zeros",
                                     "replace (rename over)"};

typedef struct ctx {
    const char *path;
    change what;
    int done;
    int failed;
} ctx;

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    char buf[1 << 16];
    size_t n;
    int ok = in && out;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
        ok = fwrite(buf, 1, n, out) == n;
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        ok = 0;
    return ok;
}

static int apply_change(const char *path, change what)
{
    struct stat st;
    if (what == CHANGE_TRUNCATE)
        return truncate(path, 0) == 0;
    if (stat(path, &st) != 0)
        return 0;
    if (what == CHANGE_ZERO) {
        int fd = open(path, O_WRONLY);
        static char zeros[1 << 16];
        off_t done = 0;
        int ok = fd >= 0;
        while (ok && done < st.st_size) {
            size_t n = (size_t)(st.st_size - done) < sizeof zeros ? (size_t)(st.st_size - done)
                                                                  : sizeof zeros;
            ok = pwrite(fd, zeros, n, done) == (ssize_t)n;
            done += (off_t)n;
        }
        if (fd >= 0)
            close(fd);
        return ok;
    }
    if (what == CHANGE_REPLACE) {
        char tmp[4096];
        FILE *f;
        snprintf(tmp, sizeof tmp, "%s.new", path);
        f = fopen(tmp, "wb");
        if (!f || fputs("not a model", f) < 0 || fclose(f) != 0)
            return 0;
        return rename(tmp, path) == 0;
    }
    return 1;
}

static void on_progress(void *user, kg_stage stage, int step, int total)
{
    ctx *c = user;
    if (stage == KG_STAGE_DENOISE && step == 1 && !c->done) {
        c->done = 1;
        if (!apply_change(c->path, c->what))
            c->failed = 1;
    }
}

static kg_status generate(kg_session *s, ctx *c, kg_output *out, kg_error *err)
{
    kg_params p;
    kg_params_init(&p);
    p.prompt = "a red house by the sea";
    p.steps = 3;
    p.seed = 1234;
    p.width = p.height = 64;
    return kg_generate(s, &p, on_progress, NULL, c, out, err);
}

/* Opens a fresh copy, generates once with the change applied mid-generation, then again. */
static void run_case(const char *src, const char *copy, change what, const kg_output *ref)
{
    kg_model_options o;
    kg_model *m = NULL;
    kg_session *s = NULL;
    kg_output out = {0}, again = {0};
    kg_error err = {0};
    ctx c = {copy, what, 0, 0};
    kg_status st;
    size_t bytes = (size_t)ref->n * ref->width * ref->height * 3;

    kgt_check(copy_file(src, copy), "copy %s -> %s", src, copy);
    kg_model_options_init(&o);
    o.backend = KG_BACKEND_CPU;
    st = kg_model_open(&m, copy, &o, &err);
    if (st == KG_OK)
        st = kg_session_new(&s, m, &err);
    kgt_check(st == KG_OK, "open %s: %s", copy, err.msg);
    if (st != KG_OK)
        goto done;
    st = generate(s, &c, &out, &err);
    kgt_check(st == KG_OK && c.done && !c.failed,
              "%s while generating: %s (change applied: %d, change failed: %d)", change_names[what],
              st == KG_OK ? "generation finished" : err.msg, c.done, c.failed);
    if (st == KG_OK) {
        kgt_check(out.n == ref->n && !memcmp(out.rgb, ref->rgb, bytes),
                  "%s: the images are byte-identical to the untouched file's", change_names[what]);
        c.done = 1;
        st = generate(s, &c, &again, &err);
        kgt_check(st == KG_OK && !memcmp(again.rgb, ref->rgb, bytes),
                  "%s: a second generation on the same model: %s", change_names[what],
                  st == KG_OK ? "identical" : err.msg);
    }
done:
    kg_output_free(&again);
    kg_output_free(&out);
    kg_session_free(s);
    kg_model_close(m);
}

static kg_status reference(const char *src, const char *copy, kg_output *ref)
{
    kg_model_options o;
    kg_model *m = NULL;
    kg_session *s = NULL;
    kg_error err = {0};
    ctx c = {copy, CHANGE_NONE, 0, 0};
    kg_status st;

    if (!copy_file(src, copy))
        return KG_ERR_IO;
    kg_model_options_init(&o);
    o.backend = KG_BACKEND_CPU;
    st = kg_model_open(&m, copy, &o, &err);
    if (st == KG_OK)
        st = kg_session_new(&s, m, &err);
    if (st == KG_OK)
        st = generate(s, &c, ref, &err);
    kgt_check(st == KG_OK, "reference generation: %s", err.msg);
    kg_session_free(s);
    kg_model_close(m);
    return st;
}

/* kg_st_read after the file shrank: KG_ERR_IO naming the tensor, no SIGBUS. */
static void reader_case(const char *src, const char *copy)
{
    kg_st_file *f = NULL;
    kg_error err = {0};
    const kg_st_tensor *t = NULL;
    float *buf = NULL;
    kg_status st;

    kgt_check(copy_file(src, copy), "copy for the reader case");
    st = kg_st_open(&f, copy, &err);
    kgt_check(st == KG_OK, "kg_st_open: %s", err.msg);
    if (st != KG_OK)
        return;
    for (size_t i = 0; i < kg_st_count(f) && !t; i++)
        if (kg_st_at(f, i)->dtype == KG_F32 && kg_st_at(f, i)->nbytes >= 1024)
            t = kg_st_at(f, i);
    kgt_check(t != NULL, "a F32 tensor of 1 KiB or more in the model");
    if (t) {
        buf = malloc(t->nbytes);
        kgt_check(kg_st_check_unchanged(f, &err) == KG_OK, "unchanged file passes the check");
        kgt_check(apply_change(copy, CHANGE_ZERO), "zero the file in place");
        st = kg_st_check_unchanged(f, &err);
        /* a same-size rewrite within the same timestamp tick is invisible to the check; zeroing
         * takes long enough on any file system with nanosecond times, but do not depend on it */
        printf("in-place rewrite: kg_st_check_unchanged -> %s \"%s\"\n", kg_status_name(st),
               err.msg);
        kgt_check(truncate(copy, 0) == 0, "truncate the file");
        err.msg[0] = '\0';
        st = kg_st_to_f32(f, t, buf, &err);
        kgt_check(st == KG_ERR_IO && strstr(err.msg, t->name) && strstr(err.msg, "truncated"),
                  "kg_st_to_f32 of '%s' after truncation: %s \"%s\"", t->name, kg_status_name(st),
                  err.msg);
        st = kg_st_check_unchanged(f, &err);
        kgt_check(st == KG_ERR_IO && strstr(err.msg, "changed on disk"),
                  "kg_st_check_unchanged after truncation: %s \"%s\"", kg_status_name(st), err.msg);
    }
    free(buf);
    kg_st_close(f);
}

int main(void)
{
    const char *src = getenv("KG_TINY_MODEL");
    char dir[] = "/tmp/kg-model-file-XXXXXX", copy[4096];
    kg_output ref = {0};

    if (!src || !*src) {
        printf("SKIP: KG_TINY_MODEL is not set\n");
        return 77;
    }
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(copy, sizeof copy, "%s/model.safetensors", dir);
    if (reference(src, copy, &ref) == KG_OK) {
        printf("reference: %d image %dx%d\n", ref.n, ref.width, ref.height);
        run_case(src, copy, CHANGE_TRUNCATE, &ref);
        run_case(src, copy, CHANGE_ZERO, &ref);
        run_case(src, copy, CHANGE_REPLACE, &ref);
    }
    reader_case(src, copy);
    kg_output_free(&ref);
    unlink(copy);
    rmdir(dir);
    return kgt_finish();
}
