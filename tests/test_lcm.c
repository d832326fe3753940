/* test_lcm.c - the LCM scheduler against diffusers 0.22.3's LCMScheduler built from SD1.5's
 * scheduler config (tests/golden-gen/gen_lcm.py, tests/data/lcm): for 2, 4 and 8 steps the
 * timesteps exactly, and every step() result (prev_sample, and the last step's denoised, which is
 * what the LCM pipeline decodes) from the recorded model outputs and the reference's own fresh
 * noise, against float64 (and float32) diffusers with max-abs 1e-4 / rel 1e-3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler.h"
#include "testutil.h"

#ifndef KG_LCM_DATA
#define KG_LCM_DATA "tests/data/lcm/lcm_sd15.safetensors"
#endif

static void run(kg_st_file *g, kg_backend *be, int N)
{
    kg_scheduler_config cfg;
    kg_scheduler s;
    kg_error err = {0};
    kg_ctx c;
    char name[96];
    size_t n;
    int64_t shape[4] = {1, 4, 8, 8};
    double *tref;
    float *x0, *buf = malloc(256 * sizeof *buf);

    kg_scheduler_config_default(&cfg);
    if (!kgt_check(kg_scheduler_init(&s, &cfg, KG_SCHED_LCM, N, &err) == KG_OK, "lcm %d: init %s",
                   N, err.msg))
        return;
    snprintf(name, sizeof name, "n%d.timesteps", N);
    tref = kgt_read_f64(g, name, &n);
    {
        int same = tref && (int)n == kg_scheduler_num_calls(&s);
        for (int i = 0; same && i < N; i++)
            same = kg_scheduler_timestep(&s, i) == tref[i];
        kgt_check(same, "lcm %d: %d timesteps %g ... %g equal diffusers'", N,
                  kg_scheduler_num_calls(&s), kg_scheduler_timestep(&s, 0),
                  kg_scheduler_timestep(&s, N - 1));
    }
    kgt_ctx(&c, be, 1 << 20);
    kgt_check(kg_scheduler_bind(&s, &c, 4, shape, &err) == KG_OK && kg_scheduler_noise(&s),
              "lcm %d: bind with a noise tensor", N);
    snprintf(name, sizeof name, "n%d.x_init", N);
    x0 = kgt_read_f32(g, name, &n);
    {
        kg_tensor x = kg_new(&c, 4, shape), e = kg_new(&c, 4, shape);
        kg_upload_f32(&c, &x, x0);
        for (int i = 0; i < N; i++) {
            float *eps, *noise;
            double *ref, *ref32;
            const char *what = i < N - 1 ? "prev_sample" : "denoised";
            snprintf(name, sizeof name, "n%d.s%03d.eps", N, i);
            eps = kgt_read_f32(g, name, &n);
            kg_upload_f32(&c, &e, eps);
            kgt_check(kg_scheduler_wants_noise(&s, i) == (i < N - 1), "lcm %d step %d: %s noise", N,
                      i, i < N - 1 ? "fresh" : "no");
            if (kg_scheduler_wants_noise(&s, i)) {
                snprintf(name, sizeof name, "n%d.s%03d.noise", N, i);
                noise = kgt_read_f32(g, name, &n);
                kg_upload_f32(&c, kg_scheduler_noise(&s), noise);
                free(noise);
            }
            kg_scheduler_step(&c, &s, &x, &e, i);
            kg_download_f32(&c, buf, &x);
            snprintf(name, sizeof name, "n%d.s%03d.%s", N, i, what);
            ref = kgt_read_f64(g, name, &n);
            snprintf(name, sizeof name, "n%d.s%03d.%s.f32", N, i, what);
            ref32 = kgt_read_f64(g, name, &n);
            snprintf(name, sizeof name, "lcm %d step %d %s vs float64 diffusers", N, i, what);
            if (kgt_check(ref && ref32 && kg_ctx_status(&c, &err) == KG_OK, "%s: ran", name)) {
                kgt_compare(name, buf, ref, n, 1e-4, 1e-3);
                snprintf(name, sizeof name, "lcm %d step %d %s vs float32 diffusers", N, i, what);
                kgt_compare(name, buf, ref32, n, 1e-4, 1e-3);
            }
            free(eps);
            free(ref);
            free(ref32);
        }
    }
    kg_ctx_release(&c);
    kg_scheduler_free(&s);
    free(tref);
    free(x0);
    free(buf);
}

int main(void)
{
    kg_st_file *g = NULL;
    kg_error err = {0};
    kg_backend *be = kgt_cpu_backend();
    kg_scheduler_config cfg;
    kg_scheduler s;
    kg_scheduler_type t;

    kgt_check(kg_scheduler_type_from_name("lcm", &t, NULL) == KG_OK && t == KG_SCHED_LCM,
              "\"lcm\" names the LCM scheduler");
    kg_scheduler_config_default(&cfg);
    kgt_check(kg_scheduler_init(&s, &cfg, KG_SCHED_LCM, 51, &err) == KG_ERR_INVALID_ARG,
              "lcm 51 steps refused: %s", err.msg);
    if (kgt_check(kg_st_open(&g, KG_LCM_DATA, &err) == KG_OK, "open %s: %s", KG_LCM_DATA,
                  err.msg)) {
        run(g, be, 2);
        run(g, be, 4);
        run(g, be, 8);
    }
    kg_st_close(g);
    kg_backend_free(be);
    return kgt_finish();
}
