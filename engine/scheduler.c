/* scheduler.c - see scheduler.h. The formulas follow diffusers 0.21.4's
 * scheduling_dpmsolver_multistep.py, scheduling_ddim.py, scheduling_pndm.py
 * and scheduling_euler_discrete.py; docs/critical-details.md lists the
 * quirks reproduced here. */
#include "scheduler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[KG_SCHED_TYPE_COUNT] = {
    [KG_SCHED_DPMPP_2M] = "dpm++2m",
    [KG_SCHED_DDIM] = "ddim",
    [KG_SCHED_PNDM] = "pndm",
    [KG_SCHED_EULER] = "euler",
    [KG_SCHED_DPMPP_2M_KARRAS] = "dpm++2m-karras",
    [KG_SCHED_LCM] = "lcm",
};

/* LCMScheduler's original_inference_steps default (SD1.5's config has none): the
 * distillation schedule the few steps are taken from */
#define KG_LCM_ORIGINAL_STEPS 50

kg_status kg_scheduler_type_from_name(const char *name, kg_scheduler_type *out, kg_error *err)
{
    if (!name || !out)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "scheduler name: NULL");
    if (strcmp(name, "dpms") == 0) {
        *out = KG_SCHED_DPMPP_2M;
        return KG_OK;
    }
    for (int t = 0; t < KG_SCHED_TYPE_COUNT; t++) {
        if (strcmp(name, type_names[t]) == 0) {
            *out = (kg_scheduler_type)t;
            return KG_OK;
        }
    }
    return kg_error_set(
        err, KG_ERR_INVALID_ARG,
        "unknown scheduler \"%s\" (dpm++2m, dpm++2m-karras, ddim, pndm, euler, lcm)", name);
}

const char *kg_scheduler_type_name(kg_scheduler_type type)
{
    return (type >= 0 && type < KG_SCHED_TYPE_COUNT) ? type_names[type] : NULL;
}

/* ---- config ---- */

void kg_scheduler_config_default(kg_scheduler_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->num_train_timesteps = 1000;
    cfg->beta_start = 0.00085;
    cfg->beta_end = 0.012;
    cfg->beta_schedule = KG_BETA_SCALED_LINEAR;
    cfg->steps_offset = 1;
    cfg->set_alpha_to_one = 0;
    cfg->spacing = KG_SPACING_DEFAULT;
    cfg->lower_order_final = 1;
    cfg->dpm_final = KG_DPM_FINAL_T0;
}

static int json_is(const kg_json *v, kg_json_type t)
{
    return kg_json_type_of(v) == t;
}

/* A string key that, when present, must hold one of the accepted values. */
static kg_status want_string(const kg_json *j, const char *key, const char *const *accepted,
                             int *index, kg_error *err)
{
    const kg_json *v = kg_json_get(j, key);
    const char *s;
    if (!v || json_is(v, KG_JSON_NULL))
        return KG_OK;
    s = kg_json_string(v);
    if (!s)
        return kg_error_set(err, KG_ERR_FORMAT, "scheduler config: \"%s\" is not a string", key);
    for (int i = 0; accepted[i]; i++) {
        if (strcmp(s, accepted[i]) == 0) {
            if (index)
                *index = i;
            return KG_OK;
        }
    }
    return kg_error_set(err, KG_ERR_UNSUPPORTED, "scheduler config: %s \"%s\" is not supported",
                        key, s);
}

/* A boolean key that, when present, must have the value this code implements. */
static kg_status want_bool(const kg_json *j, const char *key, int required, kg_error *err)
{
    const kg_json *v = kg_json_get(j, key);
    if (!v || json_is(v, KG_JSON_NULL))
        return KG_OK;
    if (!json_is(v, KG_JSON_BOOL))
        return kg_error_set(err, KG_ERR_FORMAT, "scheduler config: \"%s\" is not a boolean", key);
    if (kg_json_bool(v, required) != required)
        return kg_error_set(err, KG_ERR_UNSUPPORTED, "scheduler config: %s = %s is not supported",
                            key, required ? "false" : "true");
    return KG_OK;
}

static kg_status read_bool(const kg_json *j, const char *key, int *out, kg_error *err)
{
    const kg_json *v = kg_json_get(j, key);
    if (!v || json_is(v, KG_JSON_NULL))
        return KG_OK;
    if (!json_is(v, KG_JSON_BOOL))
        return kg_error_set(err, KG_ERR_FORMAT, "scheduler config: \"%s\" is not a boolean", key);
    *out = kg_json_bool(v, *out);
    return KG_OK;
}

static kg_status read_number(const kg_json *j, const char *key, double *out, kg_error *err)
{
    const kg_json *v = kg_json_get(j, key);
    if (!v || json_is(v, KG_JSON_NULL))
        return KG_OK;
    if (!json_is(v, KG_JSON_NUMBER))
        return kg_error_set(err, KG_ERR_FORMAT, "scheduler config: \"%s\" is not a number", key);
    *out = kg_json_number(v, *out);
    return KG_OK;
}

/* Largest accepted noise level sigma_max = sqrt((1 - alphas_cumprod[T-1]) / alphas_cumprod[T-1]). */
#define KG_SCHED_MAX_SIGMA 4096.0f

static double alphas_cumprod(const kg_scheduler_config *cfg, double *out);

kg_status kg_scheduler_config_from_json(kg_scheduler_config *cfg, const kg_json *j, kg_error *err)
{
    static const char *const schedules[] = {"scaled_linear", "linear", NULL};
    static const char *const spacings[] = {"linspace", "leading", NULL};
    static const char *const finals[] = {"sigma_min", "zero", NULL};
    static const char *const epsilon[] = {"epsilon", NULL};
    static const char *const dpmpp[] = {"dpmsolver++", NULL};
    static const char *const midpoint[] = {"midpoint", NULL};
    static const char *const linear_interp[] = {"linear", NULL};
    double num_train = 1000.0, offset = 1.0, order = 2.0;
    int schedule = 0, spacing = -1, final = 0;
    kg_status st;

    kg_scheduler_config_default(cfg);
    if (!json_is(j, KG_JSON_OBJECT))
        return kg_error_set(err, KG_ERR_FORMAT, "scheduler config: not a JSON object");
    if ((st = read_number(j, "num_train_timesteps", &num_train, err)) ||
        (st = read_number(j, "beta_start", &cfg->beta_start, err)) ||
        (st = read_number(j, "beta_end", &cfg->beta_end, err)) ||
        (st = read_number(j, "steps_offset", &offset, err)) ||
        (st = read_number(j, "solver_order", &order, err)) ||
        (st = read_bool(j, "set_alpha_to_one", &cfg->set_alpha_to_one, err)) ||
        (st = read_bool(j, "lower_order_final", &cfg->lower_order_final, err)) ||
        (st = want_string(j, "beta_schedule", schedules, &schedule, err)) ||
        (st = want_string(j, "timestep_spacing", spacings, &spacing, err)) ||
        (st = want_string(j, "final_sigmas_type", finals, &final, err)) ||
        (st = want_string(j, "prediction_type", epsilon, NULL, err)) ||
        (st = want_string(j, "algorithm_type", dpmpp, NULL, err)) ||
        (st = want_string(j, "solver_type", midpoint, NULL, err)) ||
        (st = want_string(j, "interpolation_type", linear_interp, NULL, err)) ||
        (st = want_bool(j, "skip_prk_steps", 1, err)) ||
        (st = want_bool(j, "clip_sample", 0, err)) || (st = want_bool(j, "thresholding", 0, err)) ||
        (st = want_bool(j, "rescale_betas_zero_snr", 0, err)) ||
        (st = want_bool(j, "euler_at_final", 0, err)) ||
        (st = want_bool(j, "use_lu_lambdas", 0, err)))
        return st;
    {
        const kg_json *tb = kg_json_get(j, "trained_betas");
        const kg_json *lc = kg_json_get(j, "lambda_min_clipped");
        if (tb && !json_is(tb, KG_JSON_NULL))
            return kg_error_set(err, KG_ERR_UNSUPPORTED,
                                "scheduler config: trained_betas is not supported");
        /* only the default -inf (written as null by JSON encoders that refuse -Infinity) */
        if (lc && !json_is(lc, KG_JSON_NULL))
            return kg_error_set(err, KG_ERR_UNSUPPORTED,
                                "scheduler config: lambda_min_clipped %g is not supported",
                                kg_json_number(lc, 0.0));
    }
    if (num_train < 2 || num_train > 100000 || num_train != floor(num_train))
        return kg_error_set(err, KG_ERR_FORMAT, "scheduler config: num_train_timesteps %g",
                            num_train);
    if (offset < 0 || offset != floor(offset) || offset >= num_train)
        return kg_error_set(err, KG_ERR_FORMAT, "scheduler config: steps_offset %g", offset);
    if (order != 2.0)
        return kg_error_set(err, KG_ERR_UNSUPPORTED, "scheduler config: solver_order %g (only 2)",
                            order);
    if (!(cfg->beta_start > 0 && cfg->beta_end > cfg->beta_start && cfg->beta_end < 1))
        return kg_error_set(err, KG_ERR_FORMAT, "scheduler config: beta_start %g, beta_end %g",
                            cfg->beta_start, cfg->beta_end);
    cfg->num_train_timesteps = (int64_t)num_train;
    cfg->steps_offset = (int64_t)offset;
    cfg->beta_schedule = schedule == 0 ? KG_BETA_SCALED_LINEAR : KG_BETA_LINEAR;
    cfg->spacing = spacing < 0 ? KG_SPACING_DEFAULT
                               : (spacing == 0 ? KG_SPACING_LINSPACE : KG_SPACING_LEADING);
    cfg->dpm_final = final == 1 ? KG_DPM_FINAL_ZERO : KG_DPM_FINAL_T0;
    {
        /* A schedule whose noise level overflows (alphas_cumprod reaching 0 in float, e.g.
         * beta_end 0.999) makes every image NaN; refuse it here, naming the values. SD1.5 ends
         * at alphas_cumprod 0.00466 (sigma 14.6), DDPM's linear 0.02 at 2.8e-5 (sigma 190);
         * past sigma 4096 the initial noise no longer fits float16 activations. */
        double last = alphas_cumprod(cfg, NULL);
        float a = (float)last, sigma_max = sqrtf((1.0f - a) / a);
        if (last < 0.0)
            return kg_error_set(err, KG_ERR_NOMEM, "scheduler config: no memory for the betas");
        if (!(a > 0.0f) || !(sigma_max <= KG_SCHED_MAX_SIGMA))
            return kg_error_set(err, KG_ERR_FORMAT,
                                "scheduler config: a degenerate noise schedule (%s betas %g..%g "
                                "over %lld timesteps end at alphas_cumprod %g, sigma %g; at most "
                                "%g is supported; SD1.5 has 14.6)",
                                schedule == 0 ? "scaled_linear" : "linear", cfg->beta_start,
                                cfg->beta_end, (long long)cfg->num_train_timesteps, (double)a,
                                (double)sigma_max, (double)KG_SCHED_MAX_SIGMA);
    }
    return KG_OK;
}

/* ---- the noise tables, as torch builds them in float32 ---- */

/* torch.linspace(start, end, n, dtype=float32) on the CPU (torch 1.13,
 * AVX2): step = (end - start) / (n - 1) in float; elements come in vectors of
 * 8 lanes, two vectors per loop turn, lane j = fma(j, step, base) with
 * base = fma(step, idx, start) for idx < n/2 and fma(-step, n - 1 - idx, end)
 * after; the elements past the last full pair of vectors use the base
 * formula one by one. The fused multiply-adds are GCC's contraction of the
 * kernel's `a + b * c`. Reproducing this makes the betas bit-identical. */
static void torch_linspace_f32(float *out, float start, float end, int64_t n)
{
    const float step = (end - start) / (float)(n - 1);
    const int64_t half = n / 2;
    const int64_t n_vec = (n / 16) * 16;
    int64_t idx = 0;
    for (; idx < n_vec; idx += 8) {
        float base =
            idx < half ? fmaf(step, (float)idx, start) : fmaf(-step, (float)(n - idx - 1), end);
        for (int j = 0; j < 8; j++)
            out[idx + j] = fmaf((float)j, step, base);
    }
    for (; idx < n; idx++)
        out[idx] =
            idx < half ? fmaf(step, (float)idx, start) : fmaf(-step, (float)(n - idx - 1), end);
}

/* betas -> alphas_cumprod: alphas = 1 - betas in float; torch.cumprod
 * accumulates in double on the CPU and stores float. out may be NULL; returns the last value,
 * or -1 without memory. */
static double alphas_cumprod(const kg_scheduler_config *cfg, double *out)
{
    const int64_t T = cfg->num_train_timesteps;
    float *lin = malloc((size_t)T * sizeof *lin);
    double acc = 1.0, last = 1.0;
    if (!lin)
        return -1.0;
    if (cfg->beta_schedule == KG_BETA_SCALED_LINEAR)
        torch_linspace_f32(lin, (float)sqrt(cfg->beta_start), (float)sqrt(cfg->beta_end), T);
    else
        torch_linspace_f32(lin, (float)cfg->beta_start, (float)cfg->beta_end, T);
    for (int64_t k = 0; k < T; k++) {
        float beta = cfg->beta_schedule == KG_BETA_SCALED_LINEAR ? lin[k] * lin[k] : lin[k];
        float alpha = 1.0f - beta;
        acc *= (double)alpha;
        last = (double)(float)acc;
        if (out)
            out[k] = last;
    }
    free(lin);
    return last;
}

static int make_alphas_cumprod(kg_scheduler *s)
{
    return alphas_cumprod(&s->cfg, s->alphas_cumprod) >= 0.0;
}

/* ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5, each op in float (torch). */
static double train_sigma_f32(const kg_scheduler *s, int64_t k)
{
    float a = (float)s->alphas_cumprod[k];
    float q = (1.0f - a) / a;
    return (double)sqrtf(q);
}

/* ---- timesteps ---- */

static kg_status check_spacing(const kg_scheduler_config *cfg, kg_scheduler_type type,
                               kg_error *err)
{
    if (type == KG_SCHED_LCM)
        return KG_OK; /* LCMScheduler.set_timesteps ignores timestep_spacing */
    kg_timestep_spacing def =
        (type == KG_SCHED_DDIM || type == KG_SCHED_PNDM) ? KG_SPACING_LEADING : KG_SPACING_LINSPACE;
    if (cfg->spacing != KG_SPACING_DEFAULT && cfg->spacing != def)
        return kg_error_set(err, KG_ERR_UNSUPPORTED,
                            "scheduler %s: timestep_spacing \"%s\" (only its default \"%s\")",
                            kg_scheduler_type_name(type),
                            cfg->spacing == KG_SPACING_LEADING ? "leading" : "linspace",
                            def == KG_SPACING_LEADING ? "leading" : "linspace");
    return KG_OK;
}

/* DPM linspace: np.linspace(0, T-1, N+1).round()[::-1][:-1]; numpy forms
 * i * ((T-1)/N) and rounds half to even (N = 2 gives 999, 500). */
static void dpm_linspace_timesteps(kg_scheduler *s)
{
    const int N = s->num_steps;
    const double stop = (double)(s->cfg.num_train_timesteps - 1);
    const double step = stop / N;
    for (int i = 0; i < N; i++) {
        int k = N - i; /* reversed, dropping the 0 at the end */
        double v = k == N ? stop : (double)k * step;
        s->timesteps[i] = nearbyint(v);
    }
    s->num_calls = N;
}

/* Karras sigmas (rho 7) between the training table's ends, mapped back to
 * integer timesteps by log-sigma interpolation, as 0.21.4 does it: the
 * table is passed in ascending order, so the ramp runs from sigma(0) up to
 * sigma(T-1) (the same values as the usual descending ramp, reversed), the
 * timesteps are then flipped, and repeated timesteps are dropped (50 steps
 * give 49). The sigma -> t interpolation subtracts in float32 as numpy's
 * value-based casting does against the float32 log table. */
static kg_status dpm_karras_timesteps(kg_scheduler *s, kg_error *err)
{
    const int N = s->num_steps;
    const int64_t T = s->cfg.num_train_timesteps;
    const double sig_lo = train_sigma_f32(s, 0), sig_hi = train_sigma_f32(s, T - 1);
    const double lo_inv = pow(sig_hi, 1.0 / 7.0); /* 0.21.4's "sigma_min" = in_sigmas[-1] */
    const double hi_inv = pow(sig_lo, 1.0 / 7.0);
    float *log_sig = malloc((size_t)T * sizeof *log_sig);
    double *t_asc = malloc((size_t)N * sizeof *t_asc);
    int n = 0;
    if (!log_sig || !t_asc) {
        free(log_sig);
        free(t_asc);
        return kg_error_set(err, KG_ERR_NOMEM, "scheduler: Karras tables");
    }
    for (int64_t k = 0; k < T; k++)
        log_sig[k] = (float)log(train_sigma_f32(s, k));
    for (int i = 0; i < N; i++) {
        double ramp = N == 1 ? 0.0 : (i == N - 1 ? 1.0 : (double)i * (1.0 / (N - 1)));
        double sigma = pow(hi_inv + ramp * (lo_inv - hi_inv), 7.0);
        float ls = (float)log(sigma > 1e-10 ? sigma : 1e-10);
        int64_t low = 0;
        float w;
        for (int64_t k = 0; k < T; k++)
            if (ls - log_sig[k] >= 0.0f)
                low = k;
        if (low > T - 2)
            low = T - 2;
        w = (log_sig[low] - ls) / (log_sig[low] - log_sig[low + 1]);
        w = w < 0.0f ? 0.0f : (w > 1.0f ? 1.0f : w);
        s->sigmas[i] = sigma;
        t_asc[i] = nearbyint((double)(1.0f - w) * (double)low + (double)w * (double)(low + 1));
    }
    for (int i = N - 1; i >= 0; i--) {
        int seen = 0;
        for (int k = 0; k < n; k++)
            seen |= s->timesteps[k] == t_asc[i];
        if (!seen)
            s->timesteps[n++] = t_asc[i];
    }
    s->n_sigmas = N;
    s->num_calls = n;
    free(log_sig);
    free(t_asc);
    return KG_OK;
}

/* DDIM / PNDM leading: arange(N) * (T // N) + steps_offset, descending. PNDM
 * (PLMS, skip_prk_steps) repeats the second timestep: 3 steps run at 667,
 * 334, 334, 1, so the model is called N + 1 times. */
static void leading_timesteps(kg_scheduler *s)
{
    const int N = s->num_steps;
    int n = 0;
    s->ratio = (int)(s->cfg.num_train_timesteps / N);
    for (int i = N - 1; i >= 0; i--) {
        s->timesteps[n++] = (double)((int64_t)i * s->ratio + s->cfg.steps_offset);
        if (s->type == KG_SCHED_PNDM && n == 2)
            s->timesteps[n++] = s->timesteps[1];
    }
    s->num_calls = n;
}

/* Euler linspace: np.linspace(0, T-1, N, dtype=float32)[::-1] (fractional),
 * sigmas = np.interp(t, arange(T), the float32 table) in double, then [0]
 * appended and everything cast to float32. init_noise_sigma = max sigma. */
static void euler_timesteps(kg_scheduler *s)
{
    const int N = s->num_steps;
    const int64_t T = s->cfg.num_train_timesteps;
    const double stop = (double)(T - 1);
    const double step = N > 1 ? stop / (N - 1) : 0.0;
    double max_sigma = 0.0;
    for (int i = 0; i < N; i++) {
        int k = N - 1 - i;
        double v = (N > 1 && k == N - 1) ? stop : (double)k * step;
        double t = (double)(float)v, sig;
        int64_t j = (int64_t)floor(t);
        if (j >= T - 1) {
            sig = train_sigma_f32(s, T - 1);
        } else {
            double f0 = train_sigma_f32(s, j), f1 = train_sigma_f32(s, j + 1);
            sig = (f1 - f0) * (t - (double)j) + f0;
        }
        s->timesteps[i] = t;
        s->sigmas[i] = (double)(float)sig;
        if (s->sigmas[i] > max_sigma)
            max_sigma = s->sigmas[i];
    }
    s->sigmas[N] = 0.0;
    s->n_sigmas = N + 1;
    s->num_calls = N;
    s->init_noise_sigma = max_sigma;
}

/* LCMScheduler.set_timesteps: c = T // 50; origin = [1..50] * c - 1;
 * timesteps = origin[::-(50 // N)][:N] (N = 4: 999, 759, 519, 279). */
static void lcm_timesteps(kg_scheduler *s)
{
    const int64_t orig = KG_LCM_ORIGINAL_STEPS, c = s->cfg.num_train_timesteps / orig;
    const int64_t skip = orig / s->num_steps;
    for (int i = 0; i < s->num_steps; i++)
        s->timesteps[i] = (double)((orig - (int64_t)i * skip) * c - 1);
    s->num_calls = s->num_steps;
}

kg_status kg_scheduler_init(kg_scheduler *s, const kg_scheduler_config *cfg, kg_scheduler_type type,
                            int num_steps, kg_error *err)
{
    kg_status st;
    int64_t T;
    memset(s, 0, sizeof *s);
    if (!cfg || type < 0 || type >= KG_SCHED_TYPE_COUNT)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "scheduler: bad type %d", (int)type);
    T = cfg->num_train_timesteps;
    if (T < 2 || num_steps < 1 || num_steps > T)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "scheduler %s: %d steps (1..%lld)",
                            type_names[type], num_steps, (long long)T);
    if ((st = check_spacing(cfg, type, err)))
        return st;
    if (type == KG_SCHED_LCM &&
        (num_steps > KG_LCM_ORIGINAL_STEPS || T / KG_LCM_ORIGINAL_STEPS < 1))
        return kg_error_set(err, KG_ERR_INVALID_ARG,
                            "scheduler lcm: %d steps (1..%d, a subset of the %d-step distillation "
                            "schedule; 2-8 is what LCM-LoRA is made for)",
                            num_steps, KG_LCM_ORIGINAL_STEPS, KG_LCM_ORIGINAL_STEPS);
    s->type = type;
    s->cfg = *cfg;
    s->num_steps = num_steps;
    s->init_noise_sigma = 1.0;
    s->alphas_cumprod = malloc((size_t)T * sizeof *s->alphas_cumprod);
    s->timesteps = malloc(((size_t)num_steps + 1) * sizeof *s->timesteps);
    s->sigmas = malloc(((size_t)(num_steps > T ? num_steps : T) + 1) * sizeof *s->sigmas);
    if (!s->alphas_cumprod || !s->timesteps || !s->sigmas || !make_alphas_cumprod(s)) {
        kg_scheduler_free(s);
        return kg_error_set(err, KG_ERR_NOMEM, "scheduler: tables for %d steps", num_steps);
    }
    switch (type) {
    case KG_SCHED_DPMPP_2M:
        dpm_linspace_timesteps(s);
        for (int64_t k = 0; k < T; k++)
            s->sigmas[k] = train_sigma_f32(s, k);
        s->n_sigmas = (int)T;
        break;
    case KG_SCHED_DPMPP_2M_KARRAS:
        if ((st = dpm_karras_timesteps(s, err))) {
            kg_scheduler_free(s);
            return st;
        }
        break;
    case KG_SCHED_DDIM:
    case KG_SCHED_PNDM: leading_timesteps(s); break;
    case KG_SCHED_EULER: euler_timesteps(s); break;
    case KG_SCHED_LCM: lcm_timesteps(s); break;
    default: break;
    }
    return KG_OK;
}

void kg_scheduler_free(kg_scheduler *s)
{
    if (!s)
        return;
    free(s->alphas_cumprod);
    free(s->timesteps);
    free(s->sigmas);
    s->alphas_cumprod = s->timesteps = s->sigmas = NULL;
    s->bound = 0;
}

kg_status kg_scheduler_bind(kg_scheduler *s, kg_ctx *c, int ndim, const int64_t *latent_shape,
                            kg_error *err)
{
    int n_hist = 0;
    if (!s->timesteps || !c || ndim < 1 || ndim > KG_MAX_DIMS || !latent_shape)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "scheduler bind: bad arguments");
    memset(s->hist, 0, sizeof s->hist);
    memset(&s->first_sample, 0, sizeof s->first_sample);
    memset(&s->comb, 0, sizeof s->comb);
    memset(&s->noise, 0, sizeof s->noise);
    if (s->type == KG_SCHED_DPMPP_2M || s->type == KG_SCHED_DPMPP_2M_KARRAS)
        n_hist = 2;
    else if (s->type == KG_SCHED_PNDM)
        n_hist = 3;
    for (int k = 0; k < n_hist; k++)
        s->hist[k] = kg_new(c, ndim, latent_shape);
    if (s->type == KG_SCHED_PNDM) {
        s->first_sample = kg_new(c, ndim, latent_shape);
        s->comb = kg_new(c, ndim, latent_shape);
    }
    if (s->type == KG_SCHED_LCM)
        s->noise = kg_new(c, ndim, latent_shape);
    if (kg_ctx_status(c, err) != KG_OK) {
        kg_error_prefix(err, "scheduler %s: history tensors", type_names[s->type]);
        return err ? err->code : KG_ERR_NOMEM;
    }
    s->bound = 1;
    kg_scheduler_reset(s);
    return KG_OK;
}

void kg_scheduler_reset(kg_scheduler *s)
{
    s->next = 0;
    s->n_eps = 0;
    s->ring = 0;
}

int kg_scheduler_num_calls(const kg_scheduler *s)
{
    return s->num_calls;
}

double kg_scheduler_timestep(const kg_scheduler *s, int i)
{
    return (i >= 0 && i < s->num_calls) ? s->timesteps[i] : NAN;
}

float kg_scheduler_init_noise_sigma(const kg_scheduler *s)
{
    return (float)s->init_noise_sigma;
}

const double *kg_scheduler_sigmas(const kg_scheduler *s, int *n)
{
    *n = s->n_sigmas;
    return s->n_sigmas ? s->sigmas : NULL;
}

void kg_scheduler_scale_model_input(kg_ctx *c, const kg_scheduler *s, kg_tensor *y,
                                    const kg_tensor *x, int i)
{
    if (i < 0 || i >= s->num_calls) {
        kg_backend_fail(c->be, KG_ERR_INVALID_ARG, "scheduler %s: model input for call %d of %d",
                        type_names[s->type], i, s->num_calls);
        return;
    }
    if (s->type == KG_SCHED_EULER) {
        double sig = s->sigmas[i];
        kg_scale(c, y, x, (float)(1.0 / sqrt(sig * sig + 1.0)));
    } else if (y->data != x->data) {
        kg_copy(c, y, x);
    }
}

/* ---- steps ---- */

static double dpm_alpha(const kg_scheduler *s, int64_t t)
{
    return sqrt(s->alphas_cumprod[t]);
}

static double dpm_sigma(const kg_scheduler *s, int64_t t)
{
    return sqrt(1.0 - s->alphas_cumprod[t]);
}

static double dpm_lambda(const kg_scheduler *s, int64_t t)
{
    return log(dpm_alpha(s, t)) - log(dpm_sigma(s, t));
}

/* DPM-Solver++ (data prediction), multistep order 2, midpoint:
 *   x0_i = (x - sigma_s eps) / alpha_s
 *   first order:  x = (sigma_t/sigma_s) x - alpha_t (e^-h - 1) x0_i
 *   second order: ... - 0.5 alpha_t (e^-h - 1) (x0_i - x0_{i-1}) / r0,  r0 = h0 / h
 * with s = t_i, t = t_{i+1} (t = 0 after the last step in 0.21.4), h = lambda_t - lambda_s,
 * h0 = lambda_s - lambda_{t_{i-1}}. The first step, and below 15 steps the last
 * (lower_order_final), are first order. */
static void step_dpm(kg_ctx *c, kg_scheduler *s, kg_tensor *x, const kg_tensor *eps, int i)
{
    const int n = s->num_calls;
    const int last = i == n - 1;
    const int64_t ts = (int64_t)s->timesteps[i];
    kg_tensor *x0 = &s->hist[s->ring];
    kg_tensor *x0_prev = &s->hist[s->ring ^ 1];
    const double alpha_s = dpm_alpha(s, ts), sigma_s = dpm_sigma(s, ts);

    kg_axpby(c, x0, (float)(1.0 / alpha_s), x, (float)(-sigma_s / alpha_s), eps);
    if (last && s->cfg.dpm_final == KG_DPM_FINAL_ZERO) {
        /* alpha_t = 1, sigma_t = 0, h = inf: the step returns x0 (always first order) */
        kg_copy(c, x, x0);
    } else {
        const int64_t tt = last ? 0 : (int64_t)s->timesteps[i + 1];
        const double alpha_t = dpm_alpha(s, tt), sigma_t = dpm_sigma(s, tt);
        const double h = dpm_lambda(s, tt) - dpm_lambda(s, ts);
        const double e = alpha_t * expm1(-h); /* alpha_t (e^-h - 1) */
        const int first = i == 0 || (last && s->cfg.lower_order_final && n < 15);
        if (first) {
            kg_axpby(c, x, (float)(sigma_t / sigma_s), x, (float)(-e), x0);
        } else {
            const double h0 = dpm_lambda(s, ts) - dpm_lambda(s, (int64_t)s->timesteps[i - 1]);
            const double inv_r0 = h / h0; /* 0 when a Karras schedule repeats t = 0 */
            kg_axpby(c, x, (float)(sigma_t / sigma_s), x, (float)(-e * (1.0 + 0.5 * inv_r0)), x0);
            kg_axpby(c, x, 1.0f, x, (float)(0.5 * e * inv_r0), x0_prev);
        }
    }
    s->ring ^= 1;
}

/* alphas_cumprod at a previous timestep; below 0 the "final" one. */
static double alpha_prev(const kg_scheduler *s, int64_t t)
{
    if (t >= 0)
        return s->alphas_cumprod[t];
    return s->cfg.set_alpha_to_one ? 1.0 : s->alphas_cumprod[0];
}

/* DDIM, eta 0: x = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps,
 * x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t), prev = t - T // N. */
static void step_ddim(kg_ctx *c, kg_scheduler *s, kg_tensor *x, const kg_tensor *eps, int i)
{
    const int64_t t = (int64_t)s->timesteps[i];
    const double a_t = s->alphas_cumprod[t], a_p = alpha_prev(s, t - s->ratio);
    const double cx = sqrt(a_p / a_t);
    const double ce = sqrt(1.0 - a_p) - sqrt(a_p * (1.0 - a_t) / a_t);
    kg_axpby(c, x, (float)cx, x, (float)ce, eps);
}

static kg_tensor *eps_back(kg_scheduler *s, int k) /* k = 1: the newest held eps */
{
    return &s->hist[(s->ring + s->n_eps - k) % 3];
}

static void push_eps(kg_ctx *c, kg_scheduler *s, const kg_tensor *eps)
{
    if (s->n_eps < 3) {
        kg_copy(c, &s->hist[(s->ring + s->n_eps) % 3], eps);
        s->n_eps++;
    } else {
        kg_copy(c, &s->hist[s->ring], eps);
        s->ring = (s->ring + 1) % 3;
    }
}

/* PLMS (PNDM with skip_prk_steps). Call 0 steps from t with eps_0 and keeps
 * the sample; call 1 (the repeated timestep) restarts from that sample with
 * (eps_0 + eps_1) / 2 and does not keep eps_1; then Adams-Bashforth of order
 * 2, 3, 4 over the kept eps. Update (PNDM eq. 9):
 *   x = sqrt(a_p / a_t) x - (a_p - a_t) / (a_t sqrt(1 - a_p) + sqrt(a_t (1 - a_t) a_p)) eps' */
static void step_pndm(kg_ctx *c, kg_scheduler *s, kg_tensor *x, const kg_tensor *eps, int i)
{
    int64_t t = (int64_t)s->timesteps[i], tp;
    const kg_tensor *comb = eps;
    const kg_tensor *sample = x;
    double a_t, a_p;
    if (i == 1) {
        tp = t;
        t += s->ratio;
        kg_axpby(c, &s->comb, 0.5f, eps, 0.5f, eps_back(s, 1));
        comb = &s->comb;
        sample = &s->first_sample;
    } else {
        tp = t - s->ratio;
        if (i == 0) {
            kg_copy(c, &s->first_sample, x);
        } else if (s->n_eps == 1) {
            kg_axpby(c, &s->comb, 1.5f, eps, -0.5f, eps_back(s, 1));
            comb = &s->comb;
        } else if (s->n_eps == 2) {
            kg_axpby(c, &s->comb, (float)(23.0 / 12.0), eps, (float)(-16.0 / 12.0), eps_back(s, 1));
            kg_axpby(c, &s->comb, 1.0f, &s->comb, (float)(5.0 / 12.0), eps_back(s, 2));
            comb = &s->comb;
        } else {
            kg_axpby(c, &s->comb, (float)(55.0 / 24.0), eps, (float)(-59.0 / 24.0), eps_back(s, 1));
            kg_axpby(c, &s->comb, 1.0f, &s->comb, (float)(37.0 / 24.0), eps_back(s, 2));
            kg_axpby(c, &s->comb, 1.0f, &s->comb, (float)(-9.0 / 24.0), eps_back(s, 3));
            comb = &s->comb;
        }
    }
    a_t = s->alphas_cumprod[t];
    a_p = alpha_prev(s, tp);
    kg_axpby(c, x, (float)sqrt(a_p / a_t), sample,
             (float)(-(a_p - a_t) / (a_t * sqrt(1.0 - a_p) + sqrt(a_t * (1.0 - a_t) * a_p))), comb);
    if (i != 1)
        push_eps(c, s, eps);
}

/* Euler (s_churn 0): x = x + (sigma_{i+1} - sigma_i) eps. */
static void step_euler(kg_ctx *c, kg_scheduler *s, kg_tensor *x, const kg_tensor *eps, int i)
{
    kg_axpby(c, x, 1.0f, x, (float)(s->sigmas[i + 1] - s->sigmas[i]), eps);
}

int kg_scheduler_wants_noise(const kg_scheduler *s, int i)
{
    return s->type == KG_SCHED_LCM && i >= 0 && i < s->num_calls - 1;
}

kg_tensor *kg_scheduler_noise(kg_scheduler *s)
{
    return s->noise.data ? &s->noise : NULL;
}

/* LCMScheduler.step (epsilon): x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t);
 * denoised = c_out x0 + c_skip x with the consistency boundary scalings of
 * t' = 10 t, sigma_data 0.5: c_skip = 0.25 / (t'^2 + 0.25), c_out = t' / sqrt(t'^2 + 0.25);
 * then x = sqrt(a_prev) denoised + sqrt(1 - a_prev) noise, a_prev at the next timestep.
 * The last step returns denoised itself (the pipeline decodes `denoised`; step()'s
 * prev_sample there would add noise at a_prev = a_t). */
static void step_lcm(kg_ctx *c, kg_scheduler *s, kg_tensor *x, const kg_tensor *eps, int i)
{
    const int64_t t = (int64_t)s->timesteps[i];
    const double a_t = s->alphas_cumprod[t], ts = (double)t / 0.1;
    const double c_skip = 0.25 / (ts * ts + 0.25), c_out = ts / sqrt(ts * ts + 0.25);
    kg_axpby(c, x, (float)(c_out / sqrt(a_t) + c_skip), x,
             (float)(-c_out * sqrt(1.0 - a_t) / sqrt(a_t)), eps);
    if (i < s->num_calls - 1) {
        const double a_p = s->alphas_cumprod[(int64_t)s->timesteps[i + 1]];
        kg_axpby(c, x, (float)sqrt(a_p), x, (float)sqrt(1.0 - a_p), &s->noise);
    }
}

void kg_scheduler_step(kg_ctx *c, kg_scheduler *s, kg_tensor *x, const kg_tensor *eps, int i)
{
    if (!s->bound || i != s->next || i >= s->num_calls) {
        kg_backend_fail(c->be, KG_ERR_INVALID_ARG, "scheduler %s: step %d (expected %d of %d%s)",
                        type_names[s->type], i, s->next, s->num_calls,
                        s->bound ? "" : ", not bound");
        return;
    }
    if (!kg_tensor_same_shape(x, eps) ||
        (s->hist[0].data && !kg_tensor_same_shape(x, &s->hist[0]))) {
        char a[64], b[64];
        kg_backend_fail(c->be, KG_ERR_SHAPE, "scheduler %s: x %s, eps %s", type_names[s->type],
                        kg_shape_str(x, a, sizeof a), kg_shape_str(eps, b, sizeof b));
        return;
    }
    switch (s->type) {
    case KG_SCHED_DPMPP_2M:
    case KG_SCHED_DPMPP_2M_KARRAS: step_dpm(c, s, x, eps, i); break;
    case KG_SCHED_DDIM: step_ddim(c, s, x, eps, i); break;
    case KG_SCHED_PNDM: step_pndm(c, s, x, eps, i); break;
    case KG_SCHED_EULER: step_euler(c, s, x, eps, i); break;
    case KG_SCHED_LCM: step_lcm(c, s, x, eps, i); break;
    default: break;
    }
    s->next = i + 1;
}
