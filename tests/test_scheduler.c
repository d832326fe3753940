/* test_scheduler.c - the schedulers against diffusers 0.21.4.
 *
 * 1. sched/<name>.safetensors (SD1.5 config, N = 20, 25, 50): the float32 noise
 *    table bit for bit, timesteps exactly (Euler's fractional ones to float32),
 *    sigmas, init_noise_sigma, and a free-running replay of the recorded eps:
 *    every model input and every step's sample within 1e-5 of the reference,
 *    relative to the largest reference element of that step (elements near 0
 *    make an element-wise relative error meaningless).
 * 2. kosmosg/e2e_*: the schedules Kosmos-G itself ran (the PNDM config file
 *    of SD1.5, 2-4 steps: lower_order_final, the last DPM step to t = 0, the
 *    PNDM repeated timestep), replaying noise_pred -> latents of the float64 run.
 * 3. The later-diffusers final step to sigma = 0 (config flag), names, config
 *    errors, misuse. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "scheduler.h"
#include "testutil.h"

#define REL_TOL 1e-5
#define ARENA_BYTES (8u << 20)

/* max |got - ref| / max |ref|; NaN/Inf in got or ref gives +Inf. */
static double scaled_err(const float *got, const double *ref, size_t n)
{
    double d = 0.0, m = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(ref[i]))
            return INFINITY;
        d = fmax(d, fabs(got[i] - ref[i]));
        m = fmax(m, fabs(ref[i]));
    }
    return m > 0 ? d / m : d;
}

/* The goldens' metadata configs were written by Python's json.dumps, which
 * spells lambda_min_clipped's default as -Infinity (not JSON); it is the
 * default anyway, so it becomes null here. */
static kg_json *parse_json_text(const char *text, const char *what)
{
    static const char inf[] = "-Infinity";
    kg_json *j = NULL;
    kg_error err = {0};
    char *buf, *p;
    kg_status st;
    if (!text) {
        kgt_check(0, "%s: missing", what);
        return NULL;
    }
    buf = strdup(text);
    while ((p = strstr(buf, inf)) != NULL)
        memcpy(p, "null     ", sizeof inf - 1);
    st = kg_json_parse(&j, buf, strlen(buf), what, &err);
    free(buf);
    if (st != KG_OK) {
        kgt_check(0, "%s: %s", what, err.msg);
        return NULL;
    }
    return j;
}

static kg_json *read_json_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    char *buf;
    long len;
    kg_json *j;
    if (!fp) {
        kgt_check(0, "open %s", path);
        return NULL;
    }
    fseek(fp, 0, SEEK_END);
    len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = calloc(1, (size_t)len + 1);
    if (fread(buf, 1, (size_t)len, fp) != (size_t)len)
        len = 0;
    fclose(fp);
    buf[len] = '\0';
    j = parse_json_text(buf, path);
    free(buf);
    return j;
}

static int has(const kg_st_file *f, const char *name)
{
    return kg_st_find(f, name) != NULL;
}

/* Runs the schedule from x0 with the given eps per call; returns the worst
 * scaled error of the samples (and of the model inputs in *in_err). The
 * names are printf formats taking the call index. */
typedef struct replay {
    const kg_st_file *f;
    const char *eps_fmt, *out_fmt, *in_fmt; /* in_fmt may be NULL */
    double out_err, in_err;
    int worst_step;
    size_t arena_growth, backend_allocs;
} replay;

static int run_replay(replay *r, kg_scheduler *s, const double *x_init, int ndim,
                      const int64_t *shape, float init_scale)
{
    kg_backend *be = kgt_cpu_backend();
    kg_ctx c;
    kg_error err = {0};
    kg_tensor x, xin, eps;
    size_t numel = 1, mark, allocs;
    float *host, *got;
    char name[128];
    int ok = 1;

    kgt_ctx(&c, be, ARENA_BYTES);
    for (int d = 0; d < ndim; d++)
        numel *= (size_t)shape[d];
    host = malloc(numel * sizeof *host);
    got = malloc(numel * sizeof *got);
    x = kg_new(&c, ndim, shape);
    xin = kg_new(&c, ndim, shape);
    eps = kg_new(&c, ndim, shape);
    if (kg_scheduler_bind(s, &c, ndim, shape, &err) != KG_OK) {
        kgt_check(0, "bind: %s", err.msg);
        ok = 0;
        goto done;
    }
    for (size_t i = 0; i < numel; i++)
        host[i] = (float)x_init[i];
    kg_upload_f32(&c, &x, host);
    kg_scale(&c, &x, &x, init_scale);

    r->out_err = r->in_err = 0.0;
    r->worst_step = -1;
    mark = kg_mark(&c);
    allocs = be->n_allocs;
    for (int i = 0; i < kg_scheduler_num_calls(s); i++) {
        double *e, *ref;
        size_t n;
        kg_scheduler_scale_model_input(&c, s, &xin, &x, i);
        if (r->in_fmt) {
            snprintf(name, sizeof name, r->in_fmt, i);
            ref = kgt_read_f64(r->f, name, &n);
            if (!ref) {
                ok = 0;
                break;
            }
            kg_download_f32(&c, got, &xin);
            r->in_err = fmax(r->in_err, scaled_err(got, ref, numel < n ? numel : n));
            free(ref);
        }
        snprintf(name, sizeof name, r->eps_fmt, i);
        e = kgt_read_f64(r->f, name, &n);
        if (!e || n != numel) {
            kgt_check(0, "%s: %zu elements, latents have %zu", name, n, numel);
            free(e);
            ok = 0;
            break;
        }
        for (size_t k = 0; k < numel; k++)
            host[k] = (float)e[k];
        free(e);
        kg_upload_f32(&c, &eps, host);
        kg_scheduler_step(&c, s, &x, &eps, i);
        snprintf(name, sizeof name, r->out_fmt, i);
        ref = kgt_read_f64(r->f, name, &n);
        if (!ref || n != numel) {
            free(ref);
            ok = 0;
            break;
        }
        kg_download_f32(&c, got, &x);
        {
            double er = scaled_err(got, ref, numel);
            if (er > r->out_err || r->worst_step < 0) {
                r->out_err = fmax(er, r->out_err);
                r->worst_step = i;
            }
        }
        free(ref);
    }
    r->arena_growth = kg_mark(&c) - mark;
    r->backend_allocs = be->n_allocs - allocs;
    if (kg_ctx_status(&c, &err) != KG_OK) {
        kgt_check(0, "ops: %s", err.msg);
        ok = 0;
    }
done:
    free(host);
    free(got);
    kg_ctx_release(&c);
    kg_backend_free(be);
    return ok;
}

/* ---- 1. sched/ goldens ---- */

static void check_tables(const kg_st_file *f, const kg_scheduler *s, const char *tag)
{
    size_t n;
    double *ac = kgt_read_f64(f, "alphas_cumprod", &n);
    int64_t diff = 0;
    double worst = 0.0;
    if (!ac)
        return;
    for (size_t k = 0; k < n; k++) {
        if (ac[k] != s->alphas_cumprod[k])
            diff++;
        worst = fmax(worst, fabs(ac[k] - s->alphas_cumprod[k]) / ac[k]);
    }
    kgt_check(n == (size_t)s->cfg.num_train_timesteps && diff == 0,
              "%s alphas_cumprod: %lld of %zu differ from torch's float32 table (max rel %.2e)",
              tag, (long long)diff, n, worst);
    free(ac);
}

static void replay_sched(const char *file, kg_scheduler_type type)
{
    static const int steps[] = {20, 25, 50};
    char rel[128], name[128];
    kg_st_file *f;
    kg_json *cj;
    kg_scheduler_config cfg;
    kg_error err = {0};

    snprintf(rel, sizeof rel, "sched/%s.safetensors", file);
    f = kgt_golden_open(rel);
    if (!f)
        return;
    cj = parse_json_text(kg_st_metadata(f, "config"), rel);
    if (!cj || !kgt_check(kg_scheduler_config_from_json(&cfg, cj, &err) == KG_OK,
                          "%s: config from metadata%s%s", file, err.msg[0] ? ": " : "", err.msg))
        goto out;

    for (size_t si = 0; si < sizeof steps / sizeof steps[0]; si++) {
        const int N = steps[si];
        kg_scheduler s;
        size_t n_ts, n_x, n_sig;
        double *ts, *x_init, *ref_sig, *ins;
        int exact = 1;
        replay r = {0};
        char eps_fmt[64], out_fmt[64], in_fmt[64], tag[64];
        const kg_st_tensor *xt;

        snprintf(tag, sizeof tag, "%s n%d", file, N);
        if (!kgt_check(kg_scheduler_init(&s, &cfg, type, N, &err) == KG_OK, "%s init: %s", tag,
                       err.msg))
            continue;
        if (si == 0)
            check_tables(f, &s, file);

        snprintf(name, sizeof name, "n%d.timesteps", N);
        ts = kgt_read_f64(f, name, &n_ts);
        if (ts) {
            exact = n_ts == (size_t)kg_scheduler_num_calls(&s);
            for (size_t i = 0; exact && i < n_ts; i++)
                exact = (float)kg_scheduler_timestep(&s, (int)i) == (float)ts[i];
            kgt_check(exact, "%s timesteps: %d calls, golden %zu, %s (first %.6g, last %.6g)", tag,
                      kg_scheduler_num_calls(&s), n_ts, exact ? "all equal" : "DIFFERENT",
                      kg_scheduler_timestep(&s, 0),
                      kg_scheduler_timestep(&s, kg_scheduler_num_calls(&s) - 1));
            free(ts);
        }

        snprintf(name, sizeof name, "n%d.sigmas", N);
        if (has(f, name)) {
            int n_mine;
            const double *mine = kg_scheduler_sigmas(&s, &n_mine);
            double worst = 0.0;
            ref_sig = kgt_read_f64(f, name, &n_sig);
            if (ref_sig && mine && (size_t)n_mine == n_sig) {
                for (size_t k = 0; k < n_sig; k++)
                    worst = fmax(worst, fabs(mine[k] - ref_sig[k]) / fmax(fabs(ref_sig[k]), 1e-30));
            } else {
                worst = INFINITY;
            }
            kgt_check(worst <= 1e-6, "%s sigmas: %d vs golden %zu, max rel %.2e (tol 1e-6)", tag,
                      n_mine, n_sig, worst);
            free(ref_sig);
        }

        snprintf(name, sizeof name, "n%d.init_noise_sigma", N);
        ins = kgt_read_f64(f, name, &n_sig);
        if (ins) {
            double rel_err = fabs(kg_scheduler_init_noise_sigma(&s) - ins[0]) / ins[0];
            kgt_check(rel_err <= 1e-6, "%s init_noise_sigma %.9g, golden %.9g (rel %.1e)", tag,
                      kg_scheduler_init_noise_sigma(&s), ins[0], rel_err);
            free(ins);
        }

        snprintf(name, sizeof name, "n%d.x_init", N);
        xt = kg_st_find(f, name);
        x_init = kgt_read_f64(f, name, &n_x);
        if (x_init && xt) {
            snprintf(eps_fmt, sizeof eps_fmt, "n%d.s%%03d.eps", N);
            snprintf(out_fmt, sizeof out_fmt, "n%d.s%%03d.prev_sample", N);
            snprintf(in_fmt, sizeof in_fmt, "n%d.s%%03d.model_input", N);
            r.f = f;
            r.eps_fmt = eps_fmt;
            r.out_fmt = out_fmt;
            r.in_fmt = in_fmt;
            if (run_replay(&r, &s, x_init, xt->ndim, xt->shape,
                           kg_scheduler_init_noise_sigma(&s))) {
                kgt_check(r.in_err <= REL_TOL,
                          "%s model_input: max err %.2e of max|ref| (tol %.0e)", tag, r.in_err,
                          REL_TOL);
                kgt_check(
                    r.out_err <= REL_TOL,
                    "%s prev_sample, %d steps free-running: max err %.2e of max|ref| at step %d "
                    "(tol %.0e)",
                    tag, kg_scheduler_num_calls(&s), r.out_err, r.worst_step, REL_TOL);
                kgt_check(r.arena_growth == 0 && r.backend_allocs == 0,
                          "%s steps allocate nothing (arena +%zu bytes, backend +%zu allocs)", tag,
                          r.arena_growth, r.backend_allocs);
            }
        }
        free(x_init);
        kg_scheduler_free(&s);
    }
out:
    kg_json_free(cj);
    kg_st_close(f);
}

/* ---- 2. Kosmos-G's own runs ---- */

static void replay_e2e(const char *file, kg_scheduler_type type, const kg_scheduler_config *cfg)
{
    char rel[128], eps_fmt[64], out_fmt[64], in_fmt[64];
    kg_st_file *f;
    kg_json *cj;
    kg_scheduler s;
    kg_error err = {0};
    int steps;
    size_t n_ts, n_x;
    double *ts, *noise;
    const kg_st_tensor *nt;
    const char *pre;
    replay r = {0};

    snprintf(rel, sizeof rel, "kosmosg/%s.safetensors", file);
    f = kgt_golden_open(rel);
    if (!f)
        return;
    cj = parse_json_text(kg_st_metadata(f, "case"), rel);
    steps = (int)kg_json_number(kg_json_get(cj, "steps"), 0);
    kg_json_free(cj);
    if (!kgt_check(kg_scheduler_init(&s, cfg, type, steps, &err) == KG_OK, "%s init: %s", file,
                   err.msg))
        goto out;
    pre = has(f, "out64.step0.noise_pred") ? "out64" : "out";
    snprintf(rel, sizeof rel, "%s.timesteps", pre);
    ts = kgt_read_f64(f, rel, &n_ts);
    if (ts) {
        int exact = n_ts == (size_t)kg_scheduler_num_calls(&s);
        char list[256] = "";
        for (size_t i = 0; i < n_ts; i++) {
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%g", i ? "," : "", ts[i]);
            if (exact)
                exact = kg_scheduler_timestep(&s, (int)i) == ts[i];
        }
        kgt_check(exact, "%s: %d steps -> %d model calls, timesteps %s %s", file, steps,
                  kg_scheduler_num_calls(&s), exact ? "==" : "!=", list);
        free(ts);
    }
    nt = kg_st_find(f, "in.noise");
    noise = kgt_read_f64(f, "in.noise", &n_x);
    if (noise && nt) {
        snprintf(eps_fmt, sizeof eps_fmt, "%s.step%%d.noise_pred", pre);
        snprintf(out_fmt, sizeof out_fmt, "%s.step%%d.latents", pre);
        snprintf(in_fmt, sizeof in_fmt, "%s.step%%d.latent_model_input", pre);
        r.f = f;
        r.eps_fmt = eps_fmt;
        r.out_fmt = out_fmt;
        r.in_fmt =
            has(f, "out64.step0.latent_model_input") || strcmp(pre, "out") == 0 ? in_fmt : NULL;
        if (run_replay(&r, &s, noise, nt->ndim, nt->shape, kg_scheduler_init_noise_sigma(&s))) {
            if (r.in_fmt)
                kgt_check(r.in_err <= REL_TOL, "%s model input (%s): max err %.2e (tol %.0e)", file,
                          pre, r.in_err, REL_TOL);
            kgt_check(r.out_err <= REL_TOL,
                      "%s latents vs %s.step*.latents: max err %.2e of max|ref| at step %d "
                      "(tol %.0e)",
                      file, pre, r.out_err, r.worst_step, REL_TOL);
        }
    }
    free(noise);
    kg_scheduler_free(&s);
out:
    kg_st_close(f);
}

/* ---- 3. the sigma = 0 final step, names, errors ---- */

/* With final_sigmas_type "zero" every step but the last is unchanged and the
 * last returns the x0 prediction (x - sigma_t eps) / alpha_t; 0.21.4's last
 * step differs from it by ~1e-3 of the latents' scale. */
static void check_final_zero(void)
{
    kg_st_file *f = kgt_golden_open("sched/sched_dpmpp2m.safetensors");
    kg_json *cj;
    kg_scheduler_config cfg;
    kg_scheduler s;
    kg_error err = {0};
    const int N = 20;
    size_t n;
    double *x_init, *prev, *eps, *ref_last, *x0;
    const kg_st_tensor *xt;
    replay r = {0};
    char name[64];

    if (!f)
        return;
    cj = parse_json_text(kg_st_metadata(f, "config"), "sched_dpmpp2m config");
    if (!cj || kg_scheduler_config_from_json(&cfg, cj, &err) != KG_OK) {
        kgt_check(0, "config: %s", err.msg);
        goto out;
    }
    kgt_check(cfg.dpm_final == KG_DPM_FINAL_T0, "default final step: t = 0 (diffusers 0.21.4)");
    cfg.dpm_final = KG_DPM_FINAL_ZERO;
    if (kg_scheduler_init(&s, &cfg, KG_SCHED_DPMPP_2M, N, &err) != KG_OK)
        goto out;
    xt = kg_st_find(f, "n20.x_init");
    x_init = kgt_read_f64(f, "n20.x_init", &n);
    /* all steps but the last replay the golden */
    snprintf(name, sizeof name, "n%d.s%03d.prev_sample", N, N - 2);
    prev = kgt_read_f64(f, name, &n);
    snprintf(name, sizeof name, "n%d.s%03d.eps", N, N - 1);
    eps = kgt_read_f64(f, name, &n);
    snprintf(name, sizeof name, "n%d.s%03d.prev_sample", N, N - 1);
    ref_last = kgt_read_f64(f, name, &n);
    x0 = malloc(n * sizeof *x0);
    if (x_init && xt && prev && eps && ref_last && x0) {
        const double a = sqrt(s.alphas_cumprod[50]), sg = sqrt(1.0 - s.alphas_cumprod[50]);
        double diff = 0.0, scale = 0.0;
        int t_last = (int)kg_scheduler_timestep(&s, N - 1);
        for (size_t k = 0; k < n; k++) {
            x0[k] = (prev[k] - sg * eps[k]) / a;
            diff = fmax(diff, fabs(x0[k] - ref_last[k]));
            scale = fmax(scale, fabs(ref_last[k]));
        }
        kgt_check(t_last == 50 && diff / scale > 1e-4,
                  "x0 at t=50 differs from the t = 0 result by %.2e of max|ref| (> 1e-4)",
                  diff / scale);
        r.f = f;
        r.eps_fmt = "n20.s%03d.eps";
        r.out_fmt = "n20.s%03d.prev_sample";
        r.in_fmt = NULL;
        run_replay(&r, &s, x_init, xt->ndim, xt->shape, 1.0f);
        kgt_check(r.worst_step == N - 1 && r.out_err > 1e-4,
                  "final sigma 0: only the last step leaves the t = 0 golden (err %.2e at step %d)",
                  r.out_err, r.worst_step);
        /* the last step equals x0 computed from our own second-to-last sample */
        {
            kg_backend *be = kgt_cpu_backend();
            kg_ctx c;
            kg_tensor x, e;
            float *h = malloc(n * sizeof *h);
            double worst = 0.0, mx = 0.0;
            kgt_ctx(&c, be, ARENA_BYTES);
            x = kg_new(&c, xt->ndim, xt->shape);
            e = kg_new(&c, xt->ndim, xt->shape);
            kg_scheduler_bind(&s, &c, xt->ndim, xt->shape, &err);
            for (int i = 0; i < N; i++) {
                double *ei;
                size_t ne;
                snprintf(name, sizeof name, "n20.s%03d.eps", i);
                ei = kgt_read_f64(f, name, &ne);
                for (size_t k = 0; k < n; k++)
                    h[k] = (float)(i == 0 ? x_init[k] : 0.0);
                if (i == 0)
                    kg_upload_f32(&c, &x, h);
                if (i == N - 1) {
                    kg_download_f32(&c, h, &x);
                    for (size_t k = 0; k < n; k++)
                        x0[k] = ((double)h[k] - sg * ei[k]) / a;
                }
                for (size_t k = 0; k < n; k++)
                    h[k] = (float)ei[k];
                free(ei);
                kg_upload_f32(&c, &e, h);
                kg_scheduler_step(&c, &s, &x, &e, i);
            }
            kg_download_f32(&c, h, &x);
            for (size_t k = 0; k < n; k++) {
                worst = fmax(worst, fabs(h[k] - x0[k]));
                mx = fmax(mx, fabs(x0[k]));
            }
            kgt_check(worst / mx <= REL_TOL,
                      "final sigma 0: last sample = (x - sigma eps) / alpha, err %.2e (tol %.0e)",
                      worst / mx, REL_TOL);
            free(h);
            kg_ctx_release(&c);
            kg_backend_free(be);
        }
    }
    free(x_init);
    free(prev);
    free(eps);
    free(ref_last);
    free(x0);
    kg_scheduler_free(&s);
out:
    kg_json_free(cj);
    kg_st_close(f);
}

static void check_names_and_errors(void)
{
    static const char *const bad_cfgs[] = {
        "{\"clip_sample\": true}",
        "{\"prediction_type\": \"v_prediction\"}",
        "{\"beta_schedule\": \"squaredcos_cap_v2\"}",
        "{\"skip_prk_steps\": false}",
        "{\"trained_betas\": [0.1, 0.2]}",
        "{\"solver_order\": 3}",
        "{\"timestep_spacing\": \"trailing\"}",
        "{\"num_train_timesteps\": \"1000\"}",
    };
    kg_scheduler_type t;
    kg_scheduler_config cfg;
    kg_scheduler s;
    kg_error err = {0};
    int all = 1;

    for (int k = 0; k < KG_SCHED_TYPE_COUNT; k++) {
        const char *nm = kg_scheduler_type_name((kg_scheduler_type)k);
        all &=
            nm && kg_scheduler_type_from_name(nm, &t, NULL) == KG_OK && t == (kg_scheduler_type)k;
    }
    kgt_check(all, "scheduler names round-trip");
    kgt_check(kg_scheduler_type_from_name("dpms", &t, NULL) == KG_OK && t == KG_SCHED_DPMPP_2M,
              "\"dpms\" (the demo's name) = dpm++2m");
    kgt_check(kg_scheduler_type_from_name("lms", &t, &err) == KG_ERR_INVALID_ARG &&
                  strstr(err.msg, "lms"),
              "unknown name rejected: %s", err.msg);

    for (size_t k = 0; k < sizeof bad_cfgs / sizeof bad_cfgs[0]; k++) {
        kg_json *j = parse_json_text(bad_cfgs[k], "bad config");
        kg_status st = kg_scheduler_config_from_json(&cfg, j, &err);
        if (st == KG_OK) /* spacing is checked against the type at init */
            st = kg_scheduler_init(&s, &cfg, KG_SCHED_DDIM, 10, &err);
        kgt_check(st == KG_ERR_UNSUPPORTED || st == KG_ERR_FORMAT, "%s -> %s: %s", bad_cfgs[k],
                  kg_status_name(st), err.msg);
        kg_json_free(j);
    }

    kg_scheduler_config_default(&cfg);
    kgt_check(kg_scheduler_init(&s, &cfg, KG_SCHED_DDIM, 0, &err) == KG_ERR_INVALID_ARG,
              "0 steps rejected: %s", err.msg);
    kgt_check(kg_scheduler_init(&s, &cfg, KG_SCHED_DDIM, 1001, &err) == KG_ERR_INVALID_ARG,
              "1001 steps rejected: %s", err.msg);

    /* the doc's reference values (kosmosg-reference.md 1.11) */
    if (kg_scheduler_init(&s, &cfg, KG_SCHED_DPMPP_2M, 50, &err) == KG_OK) {
        /* the doc's values are float64; the table is torch's float32 one */
        kgt_check(fabs(s.alphas_cumprod[999] / 0.0046600985 - 1) < 1e-6 &&
                      fabs(s.alphas_cumprod[0] / 0.99915 - 1) < 1e-6 &&
                      fabs(s.alphas_cumprod[500] / 0.27633268 - 1) < 1e-6,
                  "alphabar 999/0/500 = %.10f %.8f %.8f (float64 0.0046600985 0.99915 "
                  "0.27633268, rel tol 1e-6)",
                  s.alphas_cumprod[999], s.alphas_cumprod[0], s.alphas_cumprod[500]);
        kgt_check(kg_scheduler_timestep(&s, 24) == 519 && kg_scheduler_timestep(&s, 25) == 500 &&
                      kg_scheduler_timestep(&s, 49) == 20,
                  "DPM 50 steps: ..., 519, 500, ..., 20");

        /* steps out of order or unbound set the sticky error */
        {
            kg_backend *be = kgt_cpu_backend();
            kg_ctx c;
            kg_tensor x, e;
            kgt_ctx(&c, be, 1 << 20);
            x = kg_new4(&c, 1, 4, 2, 2);
            e = kg_new4(&c, 1, 4, 2, 2);
            kg_fill(&c, &x, 1.0f);
            kg_fill(&c, &e, 0.5f);
            kg_scheduler_step(&c, &s, &x, &e, 0);
            kgt_check(kg_ctx_status(&c, &err) == KG_ERR_INVALID_ARG && strstr(err.msg, "bound"),
                      "step before bind: %s", err.msg);
            kg_ctx_clear_error(&c);
            kg_scheduler_bind(&s, &c, 4, x.shape, &err);
            kg_scheduler_step(&c, &s, &x, &e, 1);
            kgt_check(kg_ctx_status(&c, &err) == KG_ERR_INVALID_ARG, "step 1 before 0: %s",
                      err.msg);
            kg_ctx_clear_error(&c);
            kg_scheduler_step(&c, &s, &x, &e, 0);
            kg_scheduler_reset(&s);
            kg_scheduler_step(&c, &s, &x, &e, 0);
            kgt_check(kg_ctx_status(&c, &err) == KG_OK, "reset restarts at step 0");
            kg_ctx_release(&c);
            kg_backend_free(be);
        }
        kg_scheduler_free(&s);
    }
}

int main(void)
{
    kg_scheduler_config sd15;
    kg_json *j = read_json_file(
        kgt_golden_path("kosmosg/kosmosg_tiny/sd15/scheduler/scheduler_config.json"));
    kg_error err = {0};

    replay_sched("sched_dpmpp2m", KG_SCHED_DPMPP_2M);
    replay_sched("sched_dpmpp2m_karras", KG_SCHED_DPMPP_2M_KARRAS);
    replay_sched("sched_ddim", KG_SCHED_DDIM);
    replay_sched("sched_pndm", KG_SCHED_PNDM);
    replay_sched("sched_euler", KG_SCHED_EULER);

    if (j && kgt_check(kg_scheduler_config_from_json(&sd15, j, &err) == KG_OK,
                       "SD1.5 scheduler_config.json%s%s", err.msg[0] ? ": " : "", err.msg)) {
        replay_e2e("e2e_two_images_dpms", KG_SCHED_DPMPP_2M, &sd15);
        replay_e2e("e2e_text_negative_dpms", KG_SCHED_DPMPP_2M, &sd15);
        replay_e2e("e2e_variation_g1_dpms", KG_SCHED_DPMPP_2M, &sd15);
        replay_e2e("e2e_app512_dpms", KG_SCHED_DPMPP_2M, &sd15);
        replay_e2e("e2e_two_images_ddim", KG_SCHED_DDIM, &sd15);
        replay_e2e("e2e_text_pndm", KG_SCHED_PNDM, &sd15);
    }
    kg_json_free(j);

    check_final_zero();
    check_names_and_errors();
    return kgt_finish();
}
