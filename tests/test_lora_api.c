/* test_lora_api.c - LoRA through the public API on the tiny Kosmos-G model: kg_params.loras with
 * scale 0 gives the same image as no LoRA (diffusers' scale 0 = off), a nonzero scale changes it,
 * a scale change or a LoRA removal between generations needs no reload and repeats exactly, the
 * same list again allocates nothing, and a LoRA that does not fit (another U-Net's file) fails
 * naming the key and leaves the session as it was without LoRA. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kosmosg.h"
#include "testutil.h"

#ifndef KG_LORA_DATA
#define KG_LORA_DATA "tests/data/lora"
#endif

static uint8_t *gen(kg_session *s, const kg_lora_ref *loras, int n, size_t *bytes, kg_error *err)
{
    kg_params p;
    kg_output out;
    uint8_t *copy = NULL;
    kg_params_init(&p);
    p.prompt = "a cat";
    p.steps = 2;
    p.seed = 42;
    p.width = p.height = 64;
    p.loras = loras;
    p.n_loras = n;
    if (kg_generate(s, &p, NULL, NULL, NULL, &out, err) != KG_OK)
        return NULL;
    *bytes = (size_t)out.width * out.height * 3;
    copy = malloc(*bytes);
    if (copy)
        memcpy(copy, out.rgb, *bytes);
    kg_output_free(&out);
    return copy;
}

static double mean_abs_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++)
        d += abs((int)a[i] - (int)b[i]);
    return n ? d / (double)n : 0;
}

int main(void)
{
    const char *path = getenv("KG_TINY_MODEL");
    kg_model_options o;
    kg_model *m = NULL;
    kg_session *s = NULL;
    kg_error err = {0};
    char good[1024], bad[1024];
    uint8_t *base = NULL, *off = NULL, *on = NULL, *on2 = NULL, *half = NULL, *after = NULL;
    size_t n = 0;

    snprintf(good, sizeof good, "%s/kosmosg_tiny.kohya.safetensors", KG_LORA_DATA);
    snprintf(bad, sizeof bad, "%s/unet_tiny4.kohya.safetensors", KG_LORA_DATA);
    kg_model_options_init(&o);
    o.backend = KG_BACKEND_CPU;
    if (!kgt_check(path && kg_model_open(&m, path, &o, &err) == KG_OK &&
                       kg_session_new(&s, m, &err) == KG_OK,
                   "open the tiny model %s: %s", path ? path : "(KG_TINY_MODEL unset)", err.msg))
        return kgt_finish();
    {
        kg_lora_ref r0 = {good, 0.0f}, r1 = {good, 1.0f}, rh = {good, 0.5f}, rb = {bad, 1.0f};
        size_t allocs;
        base = gen(s, NULL, 0, &n, &err);
        kgt_check(base != NULL, "no LoRA: %s", base ? "ok" : err.msg);
        off = gen(s, &r0, 1, &n, &err);
        kgt_check(off && base && !memcmp(off, base, n), "scale 0 = the image without LoRA (%s)",
                  off ? "ok" : err.msg);
        on = gen(s, &r1, 1, &n, &err);
        kgt_check(on && base && mean_abs_diff(on, base, n) > 0.5,
                  "scale 1 changes the image: mean |diff| %.2f of 255",
                  on && base ? mean_abs_diff(on, base, n) : -1.0);
        allocs = kg_session_alloc_count(s);
        on2 = gen(s, &r1, 1, &n, &err);
        kgt_check(on2 && on && !memcmp(on2, on, n) && kg_session_alloc_count(s) == allocs,
                  "the same LoRA again: same image, no new allocation (%zu -> %zu)", allocs,
                  kg_session_alloc_count(s));
        half = gen(s, &rh, 1, &n, &err);
        kgt_check(half && on && base && memcmp(half, on, n) && memcmp(half, base, n),
                  "scale 0.5 between generations: a third image");
        uint8_t *fail = gen(s, &rb, 1, &n, &err);
        kgt_check(fail == NULL && err.code == KG_ERR_WEIGHTS &&
                      strstr(err.msg, "unet_tiny4.kohya.safetensors") && strstr(err.msg, "lora_"),
                  "another U-Net's LoRA: %s: %s", kg_status_name(err.code), err.msg);
        after = gen(s, NULL, 0, &n, &err);
        kgt_check(after && base && !memcmp(after, base, n),
                  "after the failure, no LoRA: the first image again (%s)", after ? "ok" : err.msg);
    }
    free(base);
    free(off);
    free(on);
    free(on2);
    free(half);
    free(after);
    kg_session_free(s);
    kg_model_close(m);
    return kgt_finish();
}
