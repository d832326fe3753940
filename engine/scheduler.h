/* scheduler.h - the diffusion schedulers Kosmos-G's demo offers, matching
 * diffusers 0.21.4 (the version Kosmos-G pins) built from SD1.5's
 * scheduler_config.json.
 *
 *   dpm++2m         DPMSolverMultistepScheduler: dpmsolver++, order 2, midpoint,
 *                   linspace spacing, lower_order_final; the default
 *   dpm++2m-karras  the same with use_karras_sigmas
 *   ddim            DDIMScheduler, eta 0, leading spacing + steps_offset
 *   pndm            PNDMScheduler, PLMS only (skip_prk_steps), leading + steps_offset
 *   euler           EulerDiscreteScheduler, s_churn 0, linspace (fractional timesteps)
 *   lcm             LCMScheduler (diffusers 0.22.3; none in 0.21.4) for LCM-LoRA, 1..50 steps:
 *                   fresh noise at every step but the last, which returns the
 *                   consistency model's x0 ("denoised"), as LatentConsistencyModelPipeline
 *
 * Timesteps, noise tables and step coefficients are computed on the host in
 * double; the latent update itself runs as ops (kg_axpby, kg_copy) on backend
 * tensors, so it is the same code on every backend. The history a multistep
 * method keeps (previous x0 / eps, PNDM's first sample) lives in tensors taken
 * from the context's arena once, by kg_scheduler_bind(); a step allocates
 * nothing.
 *
 * Use:
 *   kg_scheduler_init(&s, &cfg, KG_SCHED_DPMPP_2M, 50, &err);
 *   kg_scheduler_bind(&s, c, 4, latent_shape, &err);
 *   x = noise * kg_scheduler_init_noise_sigma(&s);
 *   for (i = 0; i < kg_scheduler_num_calls(&s); i++) {
 *       kg_scheduler_scale_model_input(c, &s, xin, x, i);
 *       eps = unet(xin, kg_scheduler_timestep(&s, i));
 *       kg_scheduler_step(c, &s, x, eps, i);
 *   }
 */
#ifndef KG_SCHEDULER_H
#define KG_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "json.h"
#include "kosmosg.h" /* kg_scheduler_type and its names */
#include "ops.h"
#include "status.h"
#include "tensor.h"

typedef enum kg_beta_schedule {
    KG_BETA_SCALED_LINEAR = 0, /* linspace(sqrt(start), sqrt(end), T)^2 (SD) */
    KG_BETA_LINEAR,            /* linspace(start, end, T) */
} kg_beta_schedule;

typedef enum kg_timestep_spacing {
    KG_SPACING_DEFAULT = 0, /* the class default: linspace for DPM/Euler, leading for DDIM/PNDM */
    KG_SPACING_LINSPACE,
    KG_SPACING_LEADING,
} kg_timestep_spacing;

/* Where the last DPM-Solver++ step lands. */
typedef enum kg_dpm_final {
    KG_DPM_FINAL_T0 = 0, /* diffusers 0.21.4 (Kosmos-G): on train step t = 0, alphabar 0.99915;
                            = final_sigmas_type "sigma_min" in later diffusers */
    KG_DPM_FINAL_ZERO,   /* later diffusers' final_sigmas_type "zero": sigma = 0, a first-order
                            step, i.e. the result is the x0 prediction */
} kg_dpm_final;

/* The diffusers scheduler config (SD1.5's scheduler_config.json is a
 * PNDMScheduler config; every class reads the keys it knows). */
typedef struct kg_scheduler_config {
    int64_t num_train_timesteps;    /* num_train_timesteps: 1000 */
    double beta_start;              /* beta_start: 0.00085 */
    double beta_end;                /* beta_end: 0.012 */
    kg_beta_schedule beta_schedule; /* beta_schedule: "scaled_linear" */
    int64_t steps_offset;           /* steps_offset: 1 (leading spacing only) */
    int set_alpha_to_one;           /* set_alpha_to_one: false (DDIM/PNDM past t = 0) */
    kg_timestep_spacing spacing;    /* timestep_spacing; absent = the class default */
    int lower_order_final;          /* lower_order_final: true (DPM, below 15 steps) */
    kg_dpm_final dpm_final;         /* final_sigmas_type; absent = KG_DPM_FINAL_T0 */
} kg_scheduler_config;

/* SD1.5's values (the fields above). */
void kg_scheduler_config_default(kg_scheduler_config *cfg);

/* Reads a diffusers scheduler config object. Missing keys keep the diffusers
 * defaults of SD1.5's file; keys that ask for behaviour not implemented here
 * (prediction_type other than epsilon, clip_sample, thresholding, trained_betas,
 * skip_prk_steps false, solver_order != 2, algorithm_type != dpmsolver++,
 * solver_type != midpoint, ...) give KG_ERR_UNSUPPORTED naming the key. */
kg_status kg_scheduler_config_from_json(kg_scheduler_config *cfg, const kg_json *j, kg_error *err);

typedef struct kg_scheduler {
    kg_scheduler_type type;
    kg_scheduler_config cfg;
    int num_steps;          /* as requested */
    int num_calls;          /* model evaluations: PNDM has one more, Karras may drop duplicates */
    double *alphas_cumprod; /* [num_train_timesteps], the float32 table diffusers builds */
    double *timesteps;      /* [num_calls] */
    double *sigmas;         /* [n_sigmas]: diffusers' scheduler.sigmas after set_timesteps */
    int n_sigmas;
    double init_noise_sigma;
    int ratio; /* leading spacing: num_train_timesteps / num_steps */

    /* history, from the arena (kg_scheduler_bind) */
    int bound;
    kg_tensor hist[3];      /* DPM: x0 of this and the previous step; PNDM: past eps ring */
    kg_tensor first_sample; /* PNDM: the sample of call 0, reused by call 1 */
    kg_tensor comb;         /* PNDM: the combined eps */
    kg_tensor noise;        /* LCM: the fresh noise of the next step (kg_scheduler_noise) */
    int next;               /* the call index step() expects next */
    int n_eps;              /* PNDM: eps held in hist */
    int ring;               /* PNDM: index of the oldest eps in hist; DPM: current x0 slot */
} kg_scheduler;

/* Computes the schedule for num_steps inference steps (1..num_train_timesteps).
 * Host memory only; free with kg_scheduler_free. */
kg_status kg_scheduler_init(kg_scheduler *s, const kg_scheduler_config *cfg, kg_scheduler_type type,
                            int num_steps, kg_error *err);
void kg_scheduler_free(kg_scheduler *s);

/* Takes the history tensors (latent shape, activation dtype) from c's arena,
 * at setup, and resets the step counter. Bind again after the arena was
 * reset below them (e.g. by kg_ctx_reserve). */
kg_status kg_scheduler_bind(kg_scheduler *s, kg_ctx *c, int ndim, const int64_t *latent_shape,
                            kg_error *err);

/* Forgets the history so the same schedule can run again from call 0. */
void kg_scheduler_reset(kg_scheduler *s);

int kg_scheduler_num_calls(const kg_scheduler *s);
/* The timestep given to the model at call i (fractional for Euler). */
double kg_scheduler_timestep(const kg_scheduler *s, int i);
/* The factor the initial N(0,1) noise is multiplied by. */
float kg_scheduler_init_noise_sigma(const kg_scheduler *s);
/* diffusers' scheduler.sigmas after set_timesteps (for golden checks):
 * Euler [num_steps + 1] ending in 0; DPM the training table [T]; Karras the
 * num_steps Karras sigmas in the ascending order 0.21.4 keeps; none for
 * DDIM/PNDM (NULL, *n = 0). */
const double *kg_scheduler_sigmas(const kg_scheduler *s, int *n);

/* y = the model input for call i (x scaled for Euler, a copy otherwise);
 * y may alias x. */
void kg_scheduler_scale_model_input(kg_ctx *c, const kg_scheduler *s, kg_tensor *y,
                                    const kg_tensor *x, int i);

/* LCM: 1 when step i adds fresh N(0,1) noise, which the caller writes into
 * kg_scheduler_noise() before kg_scheduler_step(); 0 for every other step and scheduler. */
int kg_scheduler_wants_noise(const kg_scheduler *s, int i);
kg_tensor *kg_scheduler_noise(kg_scheduler *s);

/* x <- the sample after call i, given the model's eps for it. Calls must come
 * in order 0, 1, ... num_calls - 1 (an out-of-order call sets the sticky
 * error). */
void kg_scheduler_step(kg_ctx *c, kg_scheduler *s, kg_tensor *x, const kg_tensor *eps, int i);

#endif
