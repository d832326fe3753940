/* attention.c - softmax(scale q k^T) v per head, one block of queries at a time.
 *
 * Two paths, neither holding the whole L x L score matrix:
 * - fused (AVX2, v head width a multiple of 8): flash-attention style. Scores
 *   for a tile of FR query rows and up to FK keys stay in L1, the softmax is
 *   updated online (running max and sum, output rescaled when the max
 *   grows), and the output accumulates in registers and the item's buffer.
 * - GEMM: a block's scores [qb, Lk] in the thread's scratch, softmax, then
 *   a second GEMM with v.
 * Work items are (batch, head, query block). */
#include "cpu_kernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KG_ATTN_X86 1
#endif

/* Query rows per block of the GEMM path: each block re-packs K and V inside
 * the GEMMs, so larger blocks waste less (256 rows measured up to ~10%
 * faster than 64 at 4096 keys, dh 40, on a busy machine); the 4 MiB score
 * block stays within L3. */
#define Q_BLOCK 256

typedef struct attn_geom {
    int64_t lq, lk, dq, dv, hq, hv;
    float scale;
    int causal;
} attn_geom;

typedef struct attn_job {
    const kg_cpu *cpu;
    const attn_geom *g;
    int n_heads;
    int64_t n_items, qb;
    const float *q, *k, *v;
    const unsigned char *pad;
    float *o;
} attn_job;

#ifdef KG_ATTN_X86

#define FR 6   /* query rows per register tile: 12 accumulators + 3 */
#define FK 128 /* most keys per online-softmax step */
#define FQ 510 /* query rows per work item, a multiple of FR */

/* Floats of scratch the fused path needs per thread: packed K and V, the
 * item's running max, sum and output, and one score tile. */
static size_t fused_floats(const attn_geom *g)
{
    return (size_t)((g->hq + g->hv) * ((g->lk + 15) / 16 * 16) + FQ * (g->hv + 2) + FR * FK);
}

/* S[r, :kb] = scale q[r] . K[k0 + j] for a tile of FR query rows; kt holds
 * K^T in panels of 16 keys, [lk/16][hq][16], zero past the last key. */
__attribute__((target("avx2,fma"))) static void tile_scores(const float *const qr[FR], int64_t hq,
                                                            const float *kt, int64_t k0, int64_t kb,
                                                            float scale, float *s)
{
    __m256 sc = _mm256_set1_ps(scale);
    for (int64_t j0 = 0; j0 < kb; j0 += 16) {
        __m256 c[FR][2];
        const float *kp = kt + (k0 + j0) * hq;
        for (int r = 0; r < FR; r++)
            c[r][0] = c[r][1] = _mm256_setzero_ps();
        for (int64_t d = 0; d < hq; d++) {
            __m256 k0v = _mm256_loadu_ps(kp + d * 16), k1v = _mm256_loadu_ps(kp + d * 16 + 8);
            for (int r = 0; r < FR; r++) {
                __m256 b = _mm256_broadcast_ss(qr[r] + d);
                c[r][0] = _mm256_fmadd_ps(b, k0v, c[r][0]);
                c[r][1] = _mm256_fmadd_ps(b, k1v, c[r][1]);
            }
        }
        for (int r = 0; r < FR; r++) {
            _mm256_storeu_ps(s + r * FK + j0, _mm256_mul_ps(c[r][0], sc));
            _mm256_storeu_ps(s + r * FK + j0 + 8, _mm256_mul_ps(c[r][1], sc));
        }
    }
}

/* acc[r, :] += P[r, :kb] V[k0 : k0+kb, :] for FR rows; vpk holds V in
 * panels of 16 columns, [hv/16][lk][16], the last one 8 wide when
 * hv % 16 == 8. */
__attribute__((target("avx2,fma"))) static void tile_values(const float *s, const float *vpk,
                                                            int64_t lk, int64_t hv, int64_t k0,
                                                            int64_t kb, float *acc)
{
    for (int64_t e0 = 0; e0 < hv; e0 += 16) {
        if (hv - e0 >= 16) {
            const float *vp = vpk + e0 * lk + k0 * 16;
            __m256 c[FR][2];
            for (int r = 0; r < FR; r++) {
                c[r][0] = _mm256_loadu_ps(acc + r * hv + e0);
                c[r][1] = _mm256_loadu_ps(acc + r * hv + e0 + 8);
            }
            for (int64_t j = 0; j < kb; j++) {
                __m256 v0 = _mm256_loadu_ps(vp + j * 16), v1 = _mm256_loadu_ps(vp + j * 16 + 8);
                for (int r = 0; r < FR; r++) {
                    __m256 b = _mm256_broadcast_ss(s + r * FK + j);
                    c[r][0] = _mm256_fmadd_ps(b, v0, c[r][0]);
                    c[r][1] = _mm256_fmadd_ps(b, v1, c[r][1]);
                }
            }
            for (int r = 0; r < FR; r++) {
                _mm256_storeu_ps(acc + r * hv + e0, c[r][0]);
                _mm256_storeu_ps(acc + r * hv + e0 + 8, c[r][1]);
            }
        } else {
            const float *vp = vpk + e0 * lk + k0 * 8;
            __m256 c[FR];
            for (int r = 0; r < FR; r++)
                c[r] = _mm256_loadu_ps(acc + r * hv + e0);
            for (int64_t j = 0; j < kb; j++) {
                __m256 v0 = _mm256_loadu_ps(vp + j * 8);
                for (int r = 0; r < FR; r++)
                    c[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(s + r * FK + j), v0, c[r]);
            }
            for (int r = 0; r < FR; r++)
                _mm256_storeu_ps(acc + r * hv + e0, c[r]);
        }
    }
}

/* Query rows i0 .. i1-1 (at most FQ) of one head; q, v and o point at the
 * head's first column, pad at the item's key mask. The key loop is outside
 * the tile loop so a step's K and V panels are read from L2 by every tile
 * of the item; each row keeps its running max m, sum l and output acc. */
static void fused_item(const kg_cpu *cpu, const attn_geom *g, const float *q, const float *kt,
                       const float *vpk, const unsigned char *pad, float *o, int64_t i0, int64_t i1,
                       float *work)
{
    float *m = work, *l = m + FQ, *acc = l + FQ, *s = acc + FQ * g->hv;
    int64_t kend = g->causal ? i1 : g->lk;
    /* keys per step: their K and V panels fill at most half the L2 */
    int64_t fk = 32768 / (g->hq + g->hv) / 16 * 16;
    if (fk > FK)
        fk = FK;
    if (fk < 16)
        fk = 16;
    for (int64_t r = 0; r < FQ; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    memset(acc, 0, (size_t)(FQ * g->hv) * sizeof *acc);
    for (int64_t k0 = 0; k0 < kend; k0 += fk) {
        for (int64_t i = i0; i < i1; i += FR) {
            int rows = i1 - i < FR ? (int)(i1 - i) : FR;
            int64_t kb = kend - k0 < fk ? kend - k0 : fk, t = i - i0;
            const float *qr[FR];
            if (g->causal && k0 > i + rows - 1)
                continue; /* every key of the step is in this tile's future */
            if (g->causal && kb > i + rows - k0)
                kb = i + rows - k0;
            /* missing rows repeat the last one; their scores are zeroed */
            for (int r = 0; r < FR; r++)
                qr[r] = q + (i + (r < rows ? r : rows - 1)) * g->dq;
            tile_scores(qr, g->hq, kt, k0, kb, g->scale, s);
            for (int r = 0; r < FR; r++) {
                float *sr = s + r * FK, mx, alpha;
                int64_t lim = g->causal ? i + r + 1 - k0 : kb;
                if (r >= rows) {
                    memset(sr, 0, (size_t)kb * sizeof *sr);
                    continue;
                }
                lim = lim > kb ? kb : lim < 0 ? 0 : lim;
                if (pad)
                    for (int64_t j = 0; j < lim; j++)
                        if (pad[k0 + j])
                            sr[j] = -INFINITY;
                for (int64_t j = lim; j < kb; j++)
                    sr[j] = -INFINITY;
                mx = kg_cpu_max(cpu, sr, kb);
                if (mx < m[t + r])
                    mx = m[t + r];
                if (mx == -INFINITY) {
                    memset(sr, 0, (size_t)kb * sizeof *sr);
                    continue;
                }
                alpha = expf(m[t + r] - mx);
                l[t + r] = l[t + r] * alpha + kg_cpu_exp_shift_sum(cpu, sr, sr, kb, mx);
                m[t + r] = mx;
                if (alpha != 1.0f)
                    for (int64_t e = 0; e < g->hv; e++)
                        acc[(t + r) * g->hv + e] *= alpha;
            }
            tile_values(s, vpk, g->lk, g->hv, k0, kb, acc + t * g->hv);
        }
    }
    for (int64_t i = i0; i < i1; i++) {
        float inv = l[i - i0] > 0.0f ? 1.0f / l[i - i0] : 0.0f;
        for (int64_t e = 0; e < g->hv; e++)
            o[i * g->dv + e] = acc[(i - i0) * g->hv + e] * inv;
    }
}

static void fused_work_item(void *ctx, int64_t t, int tid)
{
    const attn_job *j = ctx;
    const attn_geom *g = j->g;
    int n_heads = j->n_heads;
    int64_t n_items = j->n_items, ldkt = (g->lk + 15) / 16 * 16;
    int64_t bi = t / (n_heads * n_items), h = t / n_items % n_heads;
    int64_t i0 = t % n_items * FQ, i1 = g->lq - i0 < FQ ? g->lq : i0 + FQ;
    int64_t kend = g->causal ? i1 : g->lk;
    const float *kp = j->k + bi * g->lk * g->dq + h * g->hq;
    const float *vp = j->v + bi * g->lk * g->dv + h * g->hv;
    float *kt = kg_cpu_scratch(j->cpu, tid), *vpk = kt + g->hq * ldkt;
    /* pack the keys this item can see (layouts: tile_scores, tile_values) */
    for (int64_t jj = 0; jj < (kend + 15) / 16 * 16; jj++)
        for (int64_t d = 0; d < g->hq; d++)
            kt[(jj >> 4) * g->hq * 16 + d * 16 + (jj & 15)] = jj < kend ? kp[jj * g->dq + d] : 0.0f;
    for (int64_t e0 = 0; e0 < g->hv; e0 += 16) {
        int64_t w = g->hv - e0 >= 16 ? 16 : 8;
        float *panel = vpk + e0 * g->lk;
        for (int64_t jj = 0; jj < kend; jj++)
            for (int64_t e = 0; e < w; e++)
                panel[jj * w + e] = vp[jj * g->dv + e0 + e];
    }
    fused_item(j->cpu, g, j->q + bi * g->lq * g->dq + h * g->hq, kt, vpk,
               j->pad ? j->pad + bi * g->lk : NULL, j->o + bi * g->lq * g->dv + h * g->hv, i0, i1,
               vpk + g->hv * ldkt);
}

#endif

static void gemm_block_item(void *ctx, int64_t t, int tid)
{
    const attn_job *j = ctx;
    const attn_geom *g = j->g;
    int n_heads = j->n_heads, causal = g->causal;
    int64_t n_blocks = j->n_items, qb = j->qb, lq = g->lq, lk = g->lk, dq = g->dq, dv = g->dv;
    int64_t hq = g->hq, hv = g->hv;
    float scale = g->scale;
    const kg_cpu *cpu = j->cpu;
    int64_t bi = t / (n_heads * n_blocks), h = t / n_blocks % n_heads;
    int64_t i0 = t % n_blocks * qb, rows = lq - i0 < qb ? lq - i0 : qb;
    /* causal: keys past the block's last query are masked anyway */
    int64_t nk = causal ? i0 + rows : lk;
    const float *qp = j->q + (bi * lq + i0) * dq + h * hq;
    const float *kp = j->k + bi * lk * dq + h * hq;
    const float *vp = j->v + bi * lk * dv + h * hv;
    const unsigned char *pb = j->pad ? j->pad + bi * lk : NULL;
    float *op = j->o + (bi * lq + i0) * dv + h * hv;
    float *s = kg_cpu_scratch(cpu, tid);

    float inv[Q_BLOCK];
    kg_cpu_sgemm_st(cpu, 1, rows, nk, hq, scale, qp, dq, kp, dq, 0.0f, s, nk);
    for (int64_t r = 0; r < rows; r++) {
        float *sr = s + r * nk;
        int64_t lim = causal ? i0 + r + 1 : nk;
        float mx;
        if (pb)
            for (int64_t jj = 0; jj < lim; jj++)
                if (pb[jj])
                    sr[jj] = -INFINITY;
        for (int64_t jj = lim; jj < nk; jj++)
            sr[jj] = 0.0f;
        mx = kg_cpu_max(cpu, sr, lim);
        if (mx == -INFINITY) {
            for (int64_t jj = 0; jj < lim; jj++)
                sr[jj] = 0.0f;
            inv[r] = 0.0f;
            continue;
        }
        inv[r] = 1.0f / kg_cpu_exp_shift_sum(cpu, sr, sr, lim, mx);
    }
    /* normalise the [rows, dv] output instead of the [rows, nk] weights */
    kg_cpu_sgemm_st(cpu, 0, rows, hv, nk, 1.0f, s, nk, vp, dv, 0.0f, op, dv);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t e = 0; e < hv; e++)
            op[r * dv + e] *= inv[r];
}

void kg_cpu_attention(kg_backend *be, kg_tensor *o, const kg_tensor *q, const kg_tensor *k,
                      const kg_tensor *v, const kg_tensor *key_pad, int n_heads, float scale,
                      int causal)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t nb = q->shape[0], lq = q->shape[1], lk = k->shape[1];
    int64_t dq = q->shape[2], dv = v->shape[2];
    int64_t hq = dq / n_heads, hv = dv / n_heads;
    int64_t qb = lk ? (int64_t)(cpu->scratch_floats_per_thread / (size_t)lk) : 0;
    int64_t n_blocks;
    const float *qd = q->data, *kd = k->data, *vd = v->data;
    const unsigned char *pad = key_pad ? key_pad->data : NULL;
    float *od = o->data;
    attn_geom g = {lq, lk, dq, dv, hq, hv, scale, causal};

    if (lk == 0) {
        /* no keys: every row is fully masked */
        for (int64_t i = 0; i < kg_tensor_numel(o); i++)
            od[i] = 0.0f;
        return;
    }
#ifdef KG_ATTN_X86
    if (hv % 8 == 0 && fused_floats(&g) <= cpu->scratch_floats_per_thread && kg_cpu_avx2(cpu)) {
        attn_job j = {cpu, &g, n_heads, (lq + FQ - 1) / FQ, 0, qd, kd, vd, pad, od};
        kg_cpu_parallel(cpu, nb * n_heads * j.n_items, (double)(nb * lq) * lk * (dq + dv),
                        fused_work_item, &j);
        return;
    }
#endif
    if (qb < 1) {
        kg_backend_fail(be, KG_ERR_NOMEM, "attention: a %lld-key score row exceeds the scratch",
                        (long long)lk);
        return;
    }
    if (qb > Q_BLOCK)
        qb = Q_BLOCK;
    if (qb > lq)
        qb = lq;
    n_blocks = (lq + qb - 1) / qb;

    {
        attn_job j = {cpu, &g, n_heads, n_blocks, qb, qd, kd, vd, pad, od};
        kg_cpu_parallel(cpu, nb * n_heads * n_blocks, (double)(nb * lq) * lk * (dq + dv),
                        gemm_block_item, &j);
    }
    kg_cpu_gemm_status(be, "attention");
}
