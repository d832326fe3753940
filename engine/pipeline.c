/* pipeline.c - kg_generate(): the whole Kosmos-G flow on one session.
 *
 *   prompt -> tokens ---------------------------------+
 *   images -> preprocess -> CLIP -> connector ---------+-> MLLM -> AlignerNet -> cond  [77, D]
 *   negative prompt (or "<s>") -> MLLM -> AlignerNet -----------------------------> uncond
 *   noise -> steps x { U-Net on [x; x] with [uncond; cond] -> CFG -> scheduler step } -> VAE -> RGB8
 *
 * The same code runs twice per request: first in measure mode (ops only
 * validate, the arena only counts; one denoising step is enough since every
 * step needs the same memory), then for real in exactly the arena the
 * measure pass asked for. Nothing is allocated on the backend inside the
 * stages. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "finite.h"
#include "image.h"
#include "model.h"
#include "prompt.h"
#include "rng.h"

/* Kosmos-G hard-codes SD1.5's VAE scaling factor (diffusion.py:264). */
#define KG_VAE_SCALING 0.18215f

typedef struct request {
    const kg_params *p;
    kg_prompt_seq src; /* <s> text <image> slots </image> ... */
    kg_prompt_seq neg; /* <s> + negative text */
    uint8_t *src_pad;  /* tokens == <pad> (1): the aligner's key mask */
    uint8_t *neg_pad;
    float *pixels;     /* [N, 3, 224, 224] preprocessed */
    float *latents;    /* [n, 4, h, w] initial noise (host) */
    float *step_noise; /* [n, 4, h, w] LCM's fresh noise of one step (host), or NULL */
    float *controls;   /* [n_controls, 3, H, W] control maps in [0, 1] (host) */
    float *image;      /* [3, H, W] one decoded image (host) */
    float *check;      /* host copy for the NaN/Inf checks: max(ehs, latents) floats */
    int cfg;           /* guidance > 1: batch 2n with [uncond; cond] */
    int n;             /* images to generate */
    int64_t h, w;      /* latent size */
    int64_t seed;
    kg_scheduler sched;
    kg_progress_fn progress;
    kg_dump_fn dump;
    void *user;
    int measuring;
} request;

void kg_params_init(kg_params *p)
{
    memset(p, 0, sizeof *p);
    p->steps = KG_DEFAULT_STEPS;
    p->guidance_scale = (float)KG_DEFAULT_GUIDANCE;
    p->seed = -1;
    p->num_images = 1;
    p->scheduler = KG_SCHED_DPMPP_2M;
    p->width = KG_DEFAULT_SIZE;
    p->height = KG_DEFAULT_SIZE;
}

void kg_output_free(kg_output *o)
{
    if (!o)
        return;
    free(o->rgb);
    memset(o, 0, sizeof *o);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cancelled(const request *r)
{
    return !r->measuring && r->p->cancel && *r->p->cancel;
}

/* Host copy of a backend tensor for the dump callback. */
static void dump_tensor(kg_session *s, request *r, const kg_tensor *t, const char *fmt, ...)
{
    char name[128];
    va_list ap;
    kg_tensor h;
    float *buf;
    if (!r->dump || r->measuring || kg_ctx_status(&s->ctx, NULL) != KG_OK)
        return;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    buf = malloc(kg_tensor_numel(t) * sizeof(float));
    if (!buf)
        return;
    kg_download_f32(&s->ctx, buf, t);
    h = *t;
    h.dtype = KG_F32;
    h.data = buf;
    r->dump(r->user, name, &h);
    free(buf);
}

static void dump_host(request *r, const char *name, kg_dtype dt, int ndim, const int64_t *shape,
                      const void *data)
{
    kg_tensor h;
    if (!r->dump || r->measuring)
        return;
    h = kg_tensor_make((void *)data, dt, ndim, shape);
    r->dump(r->user, name, &h);
}

/* Non-finite values never reach the user as a uniform image: every stage whose output feeds
 * the next is checked on a host copy (the encoder output once, the latents after every step,
 * the decoded pixels before quantising) and the first bad stage is named. */
static kg_status check_finite(kg_session *s, request *r, const kg_tensor *t, const char *suspects,
                              kg_error *err, const char *stage_fmt, ...)
{
    size_t n = (size_t)kg_tensor_numel(t), bad;
    char stage[96];
    va_list ap;
    if (r->measuring)
        return KG_OK;
    kg_download_f32(&s->ctx, r->check, t);
    if (kg_ctx_status(&s->ctx, err) != KG_OK)
        return err ? err->code : KG_ERR_DEVICE;
    bad = kg_first_nonfinite(r->check, n);
    if (bad == n)
        return KG_OK;
    va_start(ap, stage_fmt);
    vsnprintf(stage, sizeof stage, stage_fmt, ap);
    va_end(ap);
    return kg_error_set(err, KG_ERR_NONFINITE,
                        "%s produced a non-finite value (%s at element %zu of %zu): %s", stage,
                        isnan(r->check[bad]) ? "NaN" : "Inf", bad, n, suspects);
}

/* MLLM + AlignerNet of one token sequence into out [1, Q, D]. */
static void condition(kg_session *s, request *r, kg_tensor *out, const kg_prompt_seq *seq,
                      const uint8_t *pad, const kg_tensor *img_features, const char *dump_name)
{
    kg_model *m = s->m;
    kg_ctx *c = &s->ctx;
    size_t mark = kg_mark(c);
    int64_t T = (int64_t)seq->n;
    kg_tensor hidden = kg_new3(c, 1, T, m->mllm.cfg.dim);
    kg_mllm_forward(c, &m->mllm, &hidden, seq->ids, seq->img_mask, img_features, 1, T);
    if (dump_name)
        dump_tensor(s, r, &hidden, "%s", dump_name);
    kg_aligner_forward(c, &m->aligner, out, &hidden, pad);
    kg_reset(c, mark);
}

/* The unconditional branch, from the session cache when the negative prompt
 * is unchanged (it depends on nothing else). */
static void uncond_branch(kg_session *s, request *r, kg_tensor *unc)
{
    kg_ctx *c = &s->ctx;
    const char *key = r->p->negative_prompt ? r->p->negative_prompt : "";
    size_t n = (size_t)kg_tensor_numel(unc);

    if (!r->measuring && s->uncond && !strcmp(s->uncond_key, key)) {
        kg_upload_f32(c, unc, s->uncond);
        return;
    }
    condition(s, r, unc, &r->neg, r->neg_pad, NULL, NULL);
    if (r->measuring || kg_ctx_status(c, NULL) != KG_OK)
        return;
    free(s->uncond);
    free(s->uncond_key);
    s->uncond = malloc(n * sizeof(float));
    s->uncond_key = strdup(key);
    if (!s->uncond || !s->uncond_key) {
        free(s->uncond);
        free(s->uncond_key);
        s->uncond = NULL;
        s->uncond_key = NULL;
        return; /* no cache this time; the result in unc is still right */
    }
    kg_download_f32(c, s->uncond, unc);
}

/* Fills ehs [B, Q, D]: rows [0, n) uncond and [n, 2n) cond with CFG, else n x cond. */
static void encode(kg_session *s, request *r, kg_tensor *ehs)
{
    kg_model *m = s->m;
    kg_ctx *c = &s->ctx;
    int64_t N = r->p->n_images;
    int64_t Q = ehs->shape[1], D = ehs->shape[2];
    size_t mark = kg_mark(c);
    kg_tensor cond = kg_new3(c, 1, Q, D);
    kg_tensor feats = {0};

    if (N > 0) {
        size_t m1;
        kg_tensor clip, pix;
        feats = kg_new3(c, N, m->connector.cfg.latents, m->connector.cfg.out);
        m1 = kg_mark(c);
        clip = kg_new3(c, N, m->clip.cfg.tokens, m->clip.cfg.width);
        pix = kg_new4(c, N, 3, KG_IMAGE_SIZE, KG_IMAGE_SIZE);
        kg_upload_f32(c, &pix, r->pixels);
        kg_clip_forward(c, &m->clip, &clip, &pix);
        kg_connector_forward(c, &m->connector, &feats, &clip);
        for (int64_t k = 0; k < N; k++) {
            kg_tensor pk = kg_tensor_rows(&pix, k, 1), ck = kg_tensor_rows(&clip, k, 1),
                      fk = kg_tensor_rows(&feats, k, 1);
            pk = kg_tensor_reshape(&pk, 3, (int64_t[]){3, KG_IMAGE_SIZE, KG_IMAGE_SIZE});
            ck = kg_tensor_reshape(&ck, 2, &clip.shape[1]);
            fk = kg_tensor_reshape(&fk, 2, &feats.shape[1]);
            dump_tensor(s, r, &pk, "preprocess.%lld", (long long)k);
            dump_tensor(s, r, &ck, "clip.%lld", (long long)k);
            dump_tensor(s, r, &fk, "connector.%lld", (long long)k);
        }
        kg_reset(c, m1);
        feats = kg_tensor_reshape(&feats, 2, (int64_t[]){N * feats.shape[1], feats.shape[2]});
    }
    condition(s, r, &cond, &r->src, r->src_pad, N > 0 ? &feats : NULL, "mllm.hidden");
    {
        kg_tensor c2 = kg_tensor_reshape(&cond, 2, &cond.shape[1]);
        dump_tensor(s, r, &c2, "cond");
    }
    if (r->cfg) {
        kg_tensor unc = kg_new3(c, 1, Q, D), u2;
        uncond_branch(s, r, &unc);
        u2 = kg_tensor_reshape(&unc, 2, &unc.shape[1]);
        dump_tensor(s, r, &u2, "uncond");
        for (int i = 0; i < r->n; i++) {
            kg_tensor dst = kg_tensor_rows(ehs, i, 1);
            kg_copy(c, &dst, &unc);
        }
    }
    for (int i = 0; i < r->n; i++) {
        kg_tensor dst = kg_tensor_rows(ehs, (r->cfg ? r->n : 0) + i, 1);
        kg_copy(c, &dst, &cond);
    }
    kg_reset(c, mark);
}

/* LCM adds fresh noise after every step but the last: image j's from the seed's stream at
 * KG_RNG_STEP_OFFSET(j, i), so the result depends only on the seed, like the initial noise. */
static void step_noise(kg_session *s, request *r, int i)
{
    kg_tensor *noise = kg_scheduler_noise(&r->sched);
    size_t lat = (size_t)(s->m->unet.cfg.in_channels * r->h * r->w);
    if (!kg_scheduler_wants_noise(&r->sched, i) || !noise || r->measuring)
        return;
    for (int j = 0; j < r->n; j++)
        kg_rng_normal((uint64_t)r->seed, KG_RNG_STEP_OFFSET(j, i), r->step_noise + (size_t)j * lat,
                      lat);
    kg_upload_f32(&s->ctx, noise, r->step_noise);
}

/* diffusers controlnet_keep: 1 unless step i of n lies outside [start, end]. */
static float control_keep(int i, int n, const kg_control *k)
{
    return (double)i / n < (double)k->guidance_start ||
                   (double)(i + 1) / n > (double)k->guidance_end
               ? 0.0f
               : 1.0f;
}

/* The summed residuals of every ControlNet active at step i into *res (*resp = res),
 * or *resp = NULL when none is. A ControlNet outside its window contributes
 * scale * 0 in diffusers; it is skipped here (same sum), except in the measure
 * pass, which must size the arena for the busiest step. */
static kg_status controlnets(kg_session *s, request *r, kg_unet_residuals *res,
                             const kg_unet_residuals **resp, const kg_tensor *in, const float *ts,
                             const kg_tensor *ehs, const kg_tensor *ctl, int i, int calls)
{
    const kg_params *p = r->p;
    kg_ctx *c = &s->ctx;
    *resp = NULL;
    for (int k = 0; k < p->n_controls; k++) {
        const kg_control *ck = &p->controls[k];
        float keep = control_keep(i, calls, ck);
        if (keep == 0.0f && !r->measuring)
            continue;
        if (!*resp) {
            kg_unet_residuals_new(c, &s->m->unet.cfg, res, in->shape[0], in->shape[2],
                                  in->shape[3]);
            *resp = res;
        }
        kg_controlnet_forward(c, &ck->net->net, res, in, ts, ehs, &ctl[k], ck->scale * keep);
    }
    return kg_ctx_status(c, NULL);
}

/* x [n, 4, h, w] <- the denoised latents. */
static kg_status denoise(kg_session *s, request *r, kg_tensor *x, const kg_tensor *ehs,
                         kg_error *err)
{
    kg_model *m = s->m;
    kg_ctx *c = &s->ctx;
    const kg_params *p = r->p;
    int n = r->n, B = r->cfg ? 2 * r->n : r->n;
    int calls = kg_scheduler_num_calls(&r->sched);
    float ts[2 * KG_MAX_OUTPUTS];
    kg_tensor ctl[KG_MAX_CONTROLS];
    kg_status st;

    /* sample_controlnet: one control map per latent, repeated for the CFG halves */
    for (int k = 0; k < p->n_controls; k++) {
        int64_t H = r->h * m->vae_factor, W = r->w * m->vae_factor;
        kg_tensor first;
        ctl[k] = kg_new4(c, B, 3, H, W);
        first = kg_tensor_rows(&ctl[k], 0, 1);
        kg_upload_f32(c, &first, r->controls + (size_t)k * 3 * (size_t)(H * W));
        for (int b = 1; b < B; b++) {
            kg_tensor row = kg_tensor_rows(&ctl[k], b, 1);
            kg_copy(c, &row, &first);
        }
    }
    kg_upload_f32(c, x, r->latents);
    dump_tensor(s, r, x, "latents.init");
    kg_scale(c, x, x, kg_scheduler_init_noise_sigma(&r->sched));
    st = kg_scheduler_bind(&r->sched, c, 4, x->shape, err);
    if (st != KG_OK)
        return st;
    if (!r->measuring && r->dump) {
        int64_t *tv = malloc((size_t)calls * sizeof *tv);
        if (tv) {
            for (int i = 0; i < calls; i++)
                tv[i] = (int64_t)llround(kg_scheduler_timestep(&r->sched, i));
            dump_host(r, "timesteps", KG_I64, 1, (int64_t[]){calls}, tv);
            free(tv);
        }
    }
    for (int i = 0; i < calls; i++) {
        size_t mark = kg_mark(c);
        kg_unet_residuals res;
        const kg_unet_residuals *resp = NULL;
        kg_tensor in = kg_new4(c, B, x->shape[1], x->shape[2], x->shape[3]);
        kg_tensor eps = kg_new4(c, B, x->shape[1], x->shape[2], x->shape[3]);
        float t = (float)kg_scheduler_timestep(&r->sched, i);

        if (cancelled(r))
            return kg_error_set(err, KG_ERR_CANCELLED, "generation cancelled at step %d of %d", i,
                                calls);
        for (int b = 0; b < B; b++)
            ts[b] = t;
        if (r->cfg) {
            kg_concat(c, &in, x, x, 0);
        } else {
            kg_copy(c, &in, x);
        }
        kg_scheduler_scale_model_input(c, &r->sched, &in, &in, i);
        st = controlnets(s, r, &res, &resp, &in, ts, ehs, ctl, i, calls);
        if (st != KG_OK)
            return kg_ctx_status(c, err);
        kg_unet_forward_res(c, kg_lora_set_unet(&s->lora, &m->unet), &eps, &in, ts, ehs, resp);
        if (r->cfg) {
            kg_tensor eu = kg_tensor_rows(&eps, 0, n), ec = kg_tensor_rows(&eps, n, n);
            kg_tensor guided = kg_new4(c, n, x->shape[1], x->shape[2], x->shape[3]);
            dump_tensor(s, r, &eu, "eps.uncond.%d", i);
            dump_tensor(s, r, &ec, "eps.cond.%d", i);
            /* eps_u + s (eps_c - eps_u), diffusion.py:118-120 */
            kg_axpby(c, &guided, 1.0f - p->guidance_scale, &eu, p->guidance_scale, &ec);
            step_noise(s, r, i);
            kg_scheduler_step(c, &r->sched, x, &guided, i);
        } else {
            dump_tensor(s, r, &eps, "eps.cond.%d", i);
            step_noise(s, r, i);
            kg_scheduler_step(c, &r->sched, x, &eps, i);
        }
        dump_tensor(s, r, x, "latents.%d", i);
        kg_reset(c, mark);
        st = kg_ctx_status(c, err);
        if (st == KG_OK)
            st = check_finite(s, r, x,
                              "the U-Net's weights or the scheduler config hold NaN/Inf or "
                              "overflow",
                              err, "denoising step %d of %d (U-Net + scheduler)", i + 1, calls);
        if (st != KG_OK)
            return st;
        if (r->measuring)
            break; /* every step needs the same memory */
        if (r->progress)
            r->progress(r->user, KG_STAGE_DENOISE, i + 1, calls);
    }
    return KG_OK;
}

/* latents [n, 4, h, w] -> out->rgb, one image at a time to bound the arena. */
static kg_status decode(kg_session *s, request *r, const kg_tensor *x, kg_output *out,
                        kg_error *err)
{
    kg_model *m = s->m;
    kg_ctx *c = &s->ctx;
    int64_t H = r->h * m->vae_factor, W = r->w * m->vae_factor;
    size_t plane = (size_t)(H * W);
    float *fimg = r->dump && !r->measuring && !r->p->device_out
                      ? malloc((size_t)r->n * 3 * plane * sizeof(float))
                      : NULL;
    uint8_t *u8 = out->rgb;

    for (int i = 0; i < r->n; i++) {
        size_t mark = kg_mark(c);
        kg_tensor xi = kg_tensor_rows(x, i, 1);
        kg_tensor z = kg_new4(c, 1, x->shape[1], r->h, r->w);
        kg_tensor img = kg_new4(c, 1, 3, H, W);
        kg_status st;
        if (cancelled(r)) {
            free(fimg);
            return kg_error_set(err, KG_ERR_CANCELLED, "generation cancelled while decoding");
        }
        kg_scale(c, &z, &xi, 1.0f / KG_VAE_SCALING);
        kg_vae_decode(c, &m->vae, &img, &z);
        if (r->p->device_out && !r->measuring) {
            /* straight into the caller's device memory: the backend quantises as the host
             * loop below does and flags NaN/Inf, which the next sync reports */
            const kg_device_image *d = &r->p->device_out[i];
            kg_image_to_device(c, (void *)(uintptr_t)d->ptr, d->pitch,
                               d->format == KG_PIX_RGB ? 3 : 4, &img);
            kg_reset(c, mark);
            st = kg_ctx_status(c, err);
            if (st != KG_OK) {
                free(fimg);
                return st;
            }
            continue;
        }
        kg_download_f32(c, r->image, &img);
        kg_reset(c, mark);
        st = kg_ctx_status(c, err);
        if (st != KG_OK) {
            free(fimg);
            return st;
        }
        if (r->measuring)
            break;
        {
            size_t bad = kg_first_nonfinite(r->image, 3 * plane);
            if (bad < 3 * plane) {
                free(fimg);
                return kg_error_set(err, KG_ERR_NONFINITE,
                                    "the VAE decoder produced a non-finite value (%s at element "
                                    "%zu of %zu of image %d): its weights hold NaN/Inf or overflow",
                                    isnan(r->image[bad]) ? "NaN" : "Inf", bad, 3 * plane, i);
            }
        }
        /* (x / 2 + 0.5).clamp(0, 1), then numpy's (x * 255).round() (half-even); every value is
         * finite (checked above), so the conversion is defined */
        for (size_t k = 0; k < plane; k++) {
            for (int ch = 0; ch < 3; ch++) {
                float v = r->image[(size_t)ch * plane + k] / 2.0f + 0.5f;
                v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
                if (fimg)
                    fimg[(size_t)i * 3 * plane + (size_t)ch * plane + k] = v;
                u8[((size_t)i * plane + k) * 3 + (size_t)ch] = (uint8_t)rintf(v * 255.0f);
            }
        }
    }
    if (fimg) {
        dump_host(r, "image.float", KG_F32, 4, (int64_t[]){r->n, 3, H, W}, fimg);
        dump_host(r, "image.u8", KG_U8, 4, (int64_t[]){r->n, H, W, 3}, u8);
        free(fimg);
    }
    return KG_OK;
}

/* One pass over every stage (measure or real). */
static kg_status run(kg_session *s, request *r, kg_output *out, kg_error *err)
{
    kg_model *m = s->m;
    kg_ctx *c = &s->ctx;
    int B = r->cfg ? 2 * r->n : r->n;
    kg_tensor ehs = kg_new3(c, B, m->aligner.cfg.queries, m->aligner.cfg.dim);
    kg_tensor x = kg_new4(c, r->n, m->unet.cfg.in_channels, r->h, r->w);
    double t0 = now(), t1, t2;
    kg_status st;

    encode(s, r, &ehs);
    st = kg_ctx_status(c, err);
    if (st == KG_OK)
        st = check_finite(s, r, &ehs, "the model's weights hold NaN/Inf or overflow", err,
                          "encoding the prompt (CLIP, connector, MLLM, AlignerNet)");
    if (st != KG_OK)
        return st;
    if (cancelled(r))
        return kg_error_set(err, KG_ERR_CANCELLED, "generation cancelled after encoding");
    if (r->progress && !r->measuring)
        r->progress(r->user, KG_STAGE_ENCODE, 1, 1);
    t1 = now();
    st = denoise(s, r, &x, &ehs, err);
    if (st != KG_OK)
        return st;
    t2 = now();
    st = decode(s, r, &x, out, err);
    if (st != KG_OK)
        return st;
    if (!r->measuring) {
        out->seconds_encode = t1 - t0;
        out->seconds_denoise = t2 - t1;
        out->seconds_decode = now() - t2;
        if (r->progress)
            r->progress(r->user, KG_STAGE_DECODE, 1, 1);
    }
    return KG_OK;
}

static kg_status check_params(const kg_session *s, const kg_params *p, kg_error *err)
{
    kg_status st;
    if (!p || !p->prompt)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "no prompt given");
    if (p->n_images < 0 || p->n_images > KG_MAX_IMAGES || (p->n_images > 0 && !p->images))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "%d reference images: expected 0..%d",
                            p->n_images, KG_MAX_IMAGES);
    for (int i = 0; i < p->n_images; i++) {
        st = kg_image_check(&p->images[i], err);
        if (st != KG_OK) {
            kg_error_prefix(err, "reference image %d", i);
            return st;
        }
    }
    if (p->n_controls < 0 || p->n_controls > KG_MAX_CONTROLS || (p->n_controls > 0 && !p->controls))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "%d control maps: expected 0..%d",
                            p->n_controls, KG_MAX_CONTROLS);
    for (int i = 0; i < p->n_controls; i++) {
        const kg_control *k = &p->controls[i];
        if (!k->net)
            return kg_error_set(err, KG_ERR_INVALID_ARG, "control %d: no ControlNet given", i);
        if (k->net->m != s->m)
            return kg_error_set(err, KG_ERR_INVALID_ARG,
                                "control %d: its ControlNet was opened for another model", i);
        if (!isfinite(k->scale))
            return kg_error_set(err, KG_ERR_INVALID_ARG, "control %d: scale %g is not finite", i,
                                (double)k->scale);
        if (!(k->guidance_start >= 0.0f && k->guidance_start < k->guidance_end &&
              k->guidance_end <= 1.0f))
            return kg_error_set(err, KG_ERR_INVALID_ARG,
                                "control %d: guidance window [%g, %g]: expected 0 <= start < end "
                                "<= 1",
                                i, (double)k->guidance_start, (double)k->guidance_end);
        if (k->canny && !(k->canny_low >= 0.0f && k->canny_high >= 0.0f && k->canny_low < 1e9f &&
                          k->canny_high < 1e9f))
            return kg_error_set(err, KG_ERR_INVALID_ARG,
                                "control %d: Canny thresholds %g / %g: expected finite values >= 0",
                                i, (double)k->canny_low, (double)k->canny_high);
        st = kg_image_check(&k->image, err);
        if (st != KG_OK) {
            kg_error_prefix(err, "control image %d", i);
            return st;
        }
    }
    if (p->steps < KG_STEPS_MIN || p->steps > KG_STEPS_MAX)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "steps %d: expected %d..%d", p->steps,
                            KG_STEPS_MIN, KG_STEPS_MAX);
    if (!(p->guidance_scale >= KG_GUIDANCE_MIN && p->guidance_scale <= KG_GUIDANCE_MAX))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "guidance scale %g: expected %g..%g",
                            (double)p->guidance_scale, KG_GUIDANCE_MIN, KG_GUIDANCE_MAX);
    if (p->num_images < 1 || p->num_images > KG_MAX_OUTPUTS)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "num_images %d: expected 1..%d", p->num_images,
                            KG_MAX_OUTPUTS);
    if (p->device_out) {
        if (!s->be->ops->image_to_device)
            return kg_error_set(err, KG_ERR_UNSUPPORTED,
                                "device output: the %s backend writes no device memory (CUDA "
                                "only)",
                                s->be->ops->name);
        for (int i = 0; i < p->num_images; i++) {
            const kg_device_image *d = &p->device_out[i];
            int bpp = d->format == KG_PIX_RGB ? 3 : 4;
            if (!d->ptr ||
                (d->format != KG_PIX_RGB && d->format != KG_PIX_RGBA && d->format != KG_PIX_RGBX) ||
                d->pitch < (size_t)p->width * (size_t)bpp)
                return kg_error_set(err, KG_ERR_INVALID_ARG,
                                    "device output %d: expected a device address, format RGB, "
                                    "RGBA or RGBX and a pitch >= %d bytes (got %zu)",
                                    i, p->width * bpp, d->pitch);
        }
    }
    if (p->width < KG_SIZE_MIN || p->height < KG_SIZE_MIN || p->width > KG_SIZE_MAX ||
        p->height > KG_SIZE_MAX || p->width % s->m->size_multiple ||
        p->height % s->m->size_multiple)
        return kg_error_set(err, KG_ERR_INVALID_ARG,
                            "output size %dx%d: width and height must be multiples of %d "
                            "between %d and %d",
                            p->width, p->height, s->m->size_multiple,
                            s->m->size_multiple > KG_SIZE_MIN ? s->m->size_multiple : KG_SIZE_MIN,
                            KG_SIZE_MAX);
    return KG_OK;
}

/* tokens == <pad>: the aligner's key mask (encode_condition, kosmosg.py:333) */
static uint8_t *pad_mask(const kg_prompt_seq *seq)
{
    uint8_t *pad = malloc(seq->n ? seq->n : 1);
    if (pad)
        for (size_t i = 0; i < seq->n; i++)
            pad[i] = seq->ids[i] == KG_TOK_PAD;
    return pad;
}

static int64_t random_seed(void)
{
    uint64_t v = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(&v, sizeof v, 1, f) != 1)
            v ^= (uint64_t)clock();
        fclose(f);
    }
    /* the official demo draws from [0, 2^31 - 1] */
    return (int64_t)(v & 0x7fffffffu);
}

static void request_free(request *r)
{
    kg_prompt_seq_free(&r->src);
    kg_prompt_seq_free(&r->neg);
    kg_scheduler_free(&r->sched);
    free(r->src_pad);
    free(r->neg_pad);
    free(r->pixels);
    free(r->latents);
    free(r->step_noise);
    free(r->controls);
    free(r->image);
    free(r->check);
}

/* Each control map resized to the output size with PIL's Lanczos (diffusers
 * VaeImageProcessor.preprocess(image, height, width), do_normalize=False), then
 * / 255 in float32; an image already at the output size is only converted. */
static kg_status prepare_controls(const kg_params *p, request *r, kg_error *err)
{
    size_t plane = (size_t)p->width * (size_t)p->height;
    uint8_t *rgb = malloc(plane * 3);
    kg_status st = KG_OK;

    r->controls = malloc((size_t)p->n_controls * 3 * plane * sizeof(float));
    if (!rgb || !r->controls) {
        free(rgb);
        return kg_error_set(err, KG_ERR_NOMEM, "no host memory for %d control maps", p->n_controls);
    }
    for (int k = 0; k < p->n_controls && st == KG_OK; k++) {
        float *dst = r->controls + (size_t)k * 3 * plane;
        const kg_control *ck = &p->controls[k];
        kg_image src = ck->image;
        uint8_t *edges = NULL;
        if (ck->canny) {
            /* CannyDetector at the image's own size; its grey map is replicated (HWC3) */
            edges = malloc((size_t)(src.width * src.height));
            if (!edges) {
                st = kg_error_set(err, KG_ERR_NOMEM, "no host memory for control map %d", k);
                break;
            }
            st = kg_image_canny(&src, ck->canny_low, ck->canny_high, edges, err);
            src = (kg_image){KG_PIX_GRAY8, src.width, src.height, (size_t)src.width, edges};
        }
        if (st == KG_OK)
            st = kg_image_resize_rgb_filter(&src, p->width, p->height, KG_RESAMPLE_LANCZOS, rgb,
                                            err);
        free(edges);
        if (st != KG_OK) {
            kg_error_prefix(err, "control image %d", k);
            break;
        }
        for (size_t q = 0; q < plane; q++)
            for (int ch = 0; ch < 3; ch++)
                dst[(size_t)ch * plane + q] = (float)rgb[q * 3 + (size_t)ch] / 255.0f;
    }
    free(rgb);
    return st;
}

static kg_status prepare(kg_session *s, const kg_params *p, request *r, kg_error *err)
{
    kg_model *m = s->m;
    size_t px = (size_t)3 * KG_IMAGE_SIZE * KG_IMAGE_SIZE;
    size_t lat;
    kg_status st;

    r->p = p;
    r->n = p->num_images;
    r->cfg = p->guidance_scale > 1.0f;
    r->h = p->height / m->vae_factor;
    r->w = p->width / m->vae_factor;
    r->seed = p->seed >= 0 ? p->seed : random_seed();
    lat = (size_t)(m->unet.cfg.in_channels * r->h * r->w);

    st = kg_prompt_encode(m->tok, p->prompt, p->n_images, m->connector.cfg.latents, &r->src, err);
    if (st != KG_OK)
        return st;
    st = kg_prompt_encode_negative(m->tok, p->negative_prompt ? p->negative_prompt : "", &r->neg,
                                   err);
    if (st != KG_OK) {
        kg_error_prefix(err, "negative prompt");
        return st;
    }
    {
        /* MLLM positions run 2..T+1 in its sinusoid table, the aligner's learned ones too */
        int64_t cap = m->mllm.cfg.max_positions < m->aligner.cfg.positions - 2
                          ? m->mllm.cfg.max_positions
                          : m->aligner.cfg.positions - 2;
        if ((int64_t)r->src.n > cap || (int64_t)r->neg.n > cap)
            return kg_error_set(err, KG_ERR_PROMPT,
                                "%s too long: %zu tokens, this model takes at most %lld",
                                (int64_t)r->src.n > cap ? "prompt" : "negative prompt",
                                (int64_t)r->src.n > cap ? r->src.n : r->neg.n, (long long)cap);
    }
    r->src_pad = pad_mask(&r->src);
    r->neg_pad = pad_mask(&r->neg);
    r->pixels = malloc((p->n_images ? (size_t)p->n_images : 1) * px * sizeof(float));
    r->latents = malloc((size_t)r->n * lat * sizeof(float));
    r->image = malloc((size_t)3 * (size_t)p->width * (size_t)p->height * sizeof(float));
    {
        size_t ehs = (size_t)(r->cfg ? 2 : 1) * (size_t)r->n * (size_t)m->aligner.cfg.queries *
                     (size_t)m->aligner.cfg.dim;
        size_t nl = (size_t)r->n * lat;
        r->check = malloc((ehs > nl ? ehs : nl) * sizeof(float));
    }
    if (p->scheduler == KG_SCHED_LCM)
        r->step_noise = malloc((size_t)r->n * lat * sizeof(float));
    if (!r->src_pad || !r->neg_pad || !r->pixels || !r->latents || !r->image || !r->check ||
        (p->scheduler == KG_SCHED_LCM && !r->step_noise))
        return kg_error_set(err, KG_ERR_NOMEM, "no host memory for the request");
    for (int i = 0; i < p->n_images; i++) {
        st = kg_image_preprocess(&p->images[i], r->pixels + (size_t)i * px, err);
        if (st != KG_OK) {
            kg_error_prefix(err, "reference image %d", i);
            return st;
        }
    }
    if (p->n_controls > 0) {
        st = prepare_controls(p, r, err);
        if (st != KG_OK)
            return st;
    }
    if (p->init_latents) {
        size_t nl = (size_t)r->n * lat, bad = kg_first_nonfinite(p->init_latents, nl);
        if (bad < nl)
            return kg_error_set(err, KG_ERR_INVALID_ARG,
                                "initial latents: element %zu of %zu is %s", bad, nl,
                                isnan(p->init_latents[bad]) ? "NaN" : "Inf");
        memcpy(r->latents, p->init_latents, nl * sizeof(float));
    } else
        for (int i = 0; i < r->n; i++)
            kg_rng_normal((uint64_t)r->seed, KG_RNG_IMAGE_OFFSET(i), r->latents + (size_t)i * lat,
                          lat);
    return kg_scheduler_init(&r->sched, &m->sched_cfg, p->scheduler, p->steps, err);
}

kg_status kg_generate(kg_session *s, const kg_params *p, kg_progress_fn progress, kg_dump_fn dump,
                      void *user, kg_output *out, kg_error *err)
{
    request r;
    kg_status st;
    kg_ctx *c;

    if (!s || !out)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_generate: no session or output");
    memset(out, 0, sizeof *out);
    memset(&r, 0, sizeof r);
    c = &s->ctx;
    st = check_params(s, p, err);
    if (st != KG_OK)
        return st;
    r.progress = progress;
    r.dump = dump;
    r.user = user;
    st = prepare(s, p, &r, err);
    if (st != KG_OK)
        goto fail;
    out->rgb =
        p->device_out ? NULL : malloc((size_t)r.n * (size_t)p->width * (size_t)p->height * 3);
    if (!p->device_out && !out->rgb) {
        st = kg_error_set(err, KG_ERR_NOMEM, "no host memory for %d output images", r.n);
        goto fail;
    }
    if (dump) {
        int64_t *t64 = malloc((r.src.n ? r.src.n : 1) * sizeof *t64);
        if (t64) {
            for (size_t i = 0; i < r.src.n; i++)
                t64[i] = r.src.ids[i];
            dump_host(&r, "tokens", KG_I64, 1, (int64_t[]){(int64_t)r.src.n}, t64);
            free(t64);
        }
    }
    dump_host(&r, "image_mask", KG_U8, 1, (int64_t[]){(int64_t)r.src.n}, r.src.img_mask);

    kg_ctx_clear_error(c);
    st = kg_lora_set_apply(&s->lora, c, &s->m->unet, p->loras, p->n_loras, err);
    if (st != KG_OK)
        goto fail;
    kg_ctx_begin_measure(c);
    r.measuring = 1;
    st = run(s, &r, out, err);
    r.measuring = 0;
    if (st == KG_OK)
        st = kg_ctx_end_measure(c, err);
    if (st != KG_OK)
        goto fail;
    kg_scheduler_reset(&r.sched);
    st = run(s, &r, out, err);
    if (st != KG_OK)
        goto fail;
    st = s->be->ops->sync(s->be);
    if (st != KG_OK) {
        kg_ctx_status(c, err);
        goto fail;
    }
    out->n = r.n;
    out->width = p->width;
    out->height = p->height;
    out->seed = r.seed;
    request_free(&r);
    return KG_OK;
fail:
    request_free(&r);
    kg_output_free(out);
    kg_ctx_clear_error(c);
    if (kg_ctx_measuring(c))
        kg_ctx_reserve(c, 0, NULL);
    return st;
}
