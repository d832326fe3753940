/* attention.c - softmax(scale q k^T) v per head, one block of queries at a time.
 *
 * A block's scores [qb, Lk] live in the calling thread's scratch; qb is
 * chosen so they fit, so a 4096-token self-attention never holds the whole
 * L x L matrix. Work items are (batch, head, query block). */
#include "cpu_kernels.h"

#include <math.h>

/* Query rows per block: each block re-packs K and V inside the GEMMs, so
 * larger blocks are faster (measured: 256 rows beat 64 by ~10% at 4096
 * keys, dh 40); the 4 MiB score block stays within L3. */
#define Q_BLOCK 256

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

    if (lk == 0) {
        /* no keys: every row is fully masked */
        for (int64_t i = 0; i < kg_tensor_numel(o); i++)
            od[i] = 0.0f;
        return;
    }
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

#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic)
    for (int64_t t = 0; t < nb * n_heads * n_blocks; t++) {
        int64_t bi = t / (n_heads * n_blocks), h = t / n_blocks % n_heads;
        int64_t i0 = t % n_blocks * qb, rows = lq - i0 < qb ? lq - i0 : qb;
        /* causal: keys past the block's last query are masked anyway */
        int64_t nk = causal ? i0 + rows : lk;
        const float *qp = qd + (bi * lq + i0) * dq + h * hq;
        const float *kp = kd + bi * lk * dq + h * hq;
        const float *vp = vd + bi * lk * dv + h * hv;
        const unsigned char *pb = pad ? pad + bi * lk : NULL;
        float *op = od + (bi * lq + i0) * dv + h * hv;
        float *s = kg_cpu_scratch(cpu, kg_cpu_thread_id());

        float inv[Q_BLOCK];
        kg_cpu_sgemm_st(1, rows, nk, hq, scale, qp, dq, kp, dq, 0.0f, s, nk);
        for (int64_t r = 0; r < rows; r++) {
            float *sr = s + r * nk;
            int64_t lim = causal ? i0 + r + 1 : nk;
            float mx;
            if (pb)
                for (int64_t j = 0; j < lim; j++)
                    if (pb[j])
                        sr[j] = -INFINITY;
            for (int64_t j = lim; j < nk; j++)
                sr[j] = 0.0f;
            mx = kg_cpu_max(sr, lim);
            if (mx == -INFINITY) {
                for (int64_t j = 0; j < lim; j++)
                    sr[j] = 0.0f;
                inv[r] = 0.0f;
                continue;
            }
            inv[r] = 1.0f / kg_cpu_exp_shift_sum(sr, sr, lim, mx);
        }
        /* normalise the [rows, dv] output instead of the [rows, nk] weights */
        kg_cpu_sgemm_st(0, rows, hv, nk, 1.0f, s, nk, vp, dv, 0.0f, op, dv);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t e = 0; e < hv; e++)
                op[r * dv + e] *= inv[r];
    }
}
