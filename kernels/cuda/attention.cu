/* attention.cu - fused attention with an online softmax (flash-style):
 * scores never leave the block, so no L x L matrix exists in memory.
 *
 * A block of ATT_WARPS warps owns ATT_BQ = ATT_WARPS * ATT_ROWS query rows
 * of one (batch, head); each warp owns ATT_ROWS of them. Keys stream
 * through shared memory in tiles of 32: lane j computes the scores of key
 * j for the warp's rows, the warp reduces max and sum with shuffles, and
 * each lane accumulates output dims lane, lane + 32, ... in registers
 * (fp32), rescaled whenever the running max grows. The scale and log2(e)
 * are folded into q so the exponentials are exp2.
 *
 * Masking: keys past Lk, keys with key_pad != 0, and under causal keys past
 * the query. A row whose keys are all masked outputs 0 (backend.h). Head
 * dims: any q/k width that fits shared memory, v width up to 512. */
#include "cuda_common.cuh"

#define ATT_WARPS 4
#define ATT_ROWS 4
#define ATT_BQ (ATT_WARPS * ATT_ROWS)
#define ATT_BK 32
#define ATT_MAX_DV 512

typedef struct att_args {
    int lq, lk, dh, dv;
    int ks;                       /* shared-memory row stride of the key tile (elements) */
    int64_t q_row, k_row, v_row, o_row; /* row strides: H * Dh, H * Dh, H * Dv, H * Dv */
    float qscale;                 /* scale * log2(e) */
    int causal;
} att_args;

/* NV: output dims per lane (ceil(dv / 32), rounded up to the instance) */
template <typename T, int NV>
static __global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_kernel(T *o, const T *q, const T *k, const T *v, const unsigned char *pad, att_args a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    float *qs = (float *)smem;         /* [ATT_BQ][dh], scaled */
    T *kt = (T *)(qs + ATT_BQ * a.dh); /* [ATT_BK][ks] */
    T *vt = kt + ATT_BK * a.ks;        /* [ATT_BK][dv] */
    const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * ATT_BQ;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const T *qb = q + (int64_t)b * a.lq * a.q_row + (int64_t)h * a.dh;
    const T *kb = k + (int64_t)b * a.lk * a.k_row + (int64_t)h * a.dh;
    const T *vb = v + (int64_t)b * a.lk * a.v_row + (int64_t)h * a.dv;
    const unsigned char *pb = pad ? pad + (int64_t)b * a.lk : NULL;
    const T zero = kg_st<T>(0.0f);
    float m[ATT_ROWS], l[ATT_ROWS], acc[ATT_ROWS][NV];
    int kend = a.lk;

    for (int t = threadIdx.x; t < ATT_BQ * a.dh; t += blockDim.x) {
        int r = t / a.dh, d = t % a.dh, i = i0 + r;
        qs[t] = i < a.lq ? kg_ld(qb[(int64_t)i * a.q_row + d]) * a.qscale : 0.0f;
    }
#pragma unroll
    for (int r = 0; r < ATT_ROWS; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int e = 0; e < NV; e++)
            acc[r][e] = 0.0f;
    }
    /* under causal no row of this block sees a key past its last query */
    if (a.causal && i0 + ATT_BQ < kend)
        kend = i0 + ATT_BQ;

    for (int j0 = 0; j0 < kend; j0 += ATT_BK) {
        float p[ATT_ROWS];
        int j = j0 + lane;
        bool key_ok;

        __syncthreads(); /* the previous tile is consumed (and qs is written) */
        for (int t = threadIdx.x; t < ATT_BK * a.dh; t += blockDim.x) {
            int r = t / a.dh, d = t % a.dh;
            kt[r * a.ks + d] = j0 + r < a.lk ? kb[(int64_t)(j0 + r) * a.k_row + d] : zero;
        }
        for (int t = threadIdx.x; t < ATT_BK * a.dv; t += blockDim.x) {
            int r = t / a.dv, d = t % a.dv;
            vt[t] = j0 + r < a.lk ? vb[(int64_t)(j0 + r) * a.v_row + d] : zero;
        }
        __syncthreads();

        key_ok = j < a.lk && !(pb && pb[j]);
        {
            float s[ATT_ROWS];
            const T *kr = kt + lane * a.ks;
            const float *qw = qs + warp * ATT_ROWS * a.dh;
#pragma unroll
            for (int r = 0; r < ATT_ROWS; r++)
                s[r] = 0.0f;
            for (int d = 0; d < a.dh; d++) {
                float kv = kg_ld(kr[d]);
#pragma unroll
                for (int r = 0; r < ATT_ROWS; r++)
                    s[r] += qw[r * a.dh + d] * kv;
            }
#pragma unroll
            for (int r = 0; r < ATT_ROWS; r++) {
                int i = i0 + warp * ATT_ROWS + r;
                bool ok = key_ok && (!a.causal || j <= i);
                float sr = ok ? s[r] : -INFINITY;
                /* mx is the same in every lane, so the branch is warp-uniform */
                float mx = fmaxf(m[r], kg_warp_max(sr));
                if (mx == -INFINITY) {
                    p[r] = 0.0f;
                    continue;
                }
                float corr = exp2f(m[r] - mx); /* 0 while m[r] is still -inf */
                p[r] = ok ? exp2f(sr - mx) : 0.0f;
                l[r] = l[r] * corr + kg_warp_sum(p[r]);
                m[r] = mx;
#pragma unroll
                for (int e = 0; e < NV; e++)
                    acc[r][e] *= corr;
            }
        }
        for (int jj = 0; jj < ATT_BK; jj++) {
            const T *vr = vt + jj * a.dv;
            float pj[ATT_ROWS];
#pragma unroll
            for (int r = 0; r < ATT_ROWS; r++)
                pj[r] = __shfl_sync(KG_FULL_MASK, p[r], jj);
#pragma unroll
            for (int e = 0; e < NV; e++) {
                int d = lane + 32 * e;
                if (d < a.dv) {
                    float vv = kg_ld(vr[d]);
#pragma unroll
                    for (int r = 0; r < ATT_ROWS; r++)
                        acc[r][e] += pj[r] * vv;
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < ATT_ROWS; r++) {
        int i = i0 + warp * ATT_ROWS + r;
        float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        if (i >= a.lq)
            continue;
#pragma unroll
        for (int e = 0; e < NV; e++) {
            int d = lane + 32 * e;
            if (d < a.dv)
                o[((int64_t)b * a.lq + i) * a.o_row + (int64_t)h * a.dv + d] =
                    kg_st<T>(acc[r][e] * inv);
        }
    }
}

template <typename T, int NV>
static cudaError_t attention_cuda(T *o, const T *q, const T *k, const T *v, const unsigned char *pad,
                                  const att_args &a, int nb, int heads, size_t smem, cudaStream_t s)
{
    dim3 grid((unsigned)((a.lq + ATT_BQ - 1) / ATT_BQ), (unsigned)heads, (unsigned)nb);
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(attention_kernel<T, NV>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess)
            return e;
    }
    attention_kernel<T, NV><<<grid, ATT_WARPS * 32, smem, s>>>(o, q, k, v, pad, a);
    return cudaGetLastError();
}

template <typename T>
static cudaError_t attention_dispatch(T *o, const T *q, const T *k, const T *v,
                                      const unsigned char *pad, const att_args &a, int nb, int heads,
                                      size_t smem, cudaStream_t s)
{
    if (a.dv <= 64)
        return attention_cuda<T, 2>(o, q, k, v, pad, a, nb, heads, smem, s);
    if (a.dv <= 128)
        return attention_cuda<T, 4>(o, q, k, v, pad, a, nb, heads, smem, s);
    if (a.dv <= 256)
        return attention_cuda<T, 8>(o, q, k, v, pad, a, nb, heads, smem, s);
    return attention_cuda<T, 16>(o, q, k, v, pad, a, nb, heads, smem, s);
}

/* Row stride of the key tile in elements: an odd number of 32-bit words,
 * so the 32 lanes reading one key each hit 32 different banks. */
static int key_stride(int dh, size_t es)
{
    int words = (int)(((size_t)dh * es + 3) / 4);
    if (words % 2 == 0)
        words++;
    return (int)((size_t)words * 4 / es);
}

extern "C" void kg_cuda_attention(kg_backend *be, kg_tensor *o, const kg_tensor *q,
                                  const kg_tensor *k, const kg_tensor *v, const kg_tensor *key_pad,
                                  int n_heads, float scale, int causal)
{
    kg_cuda *cu = kg_cuda_of(be);
    size_t es = kg_dtype_size(q->dtype), smem;
    int64_t nb = q->shape[0];
    att_args a;
    cudaError_t e = cudaSuccess;

    a.lq = (int)q->shape[1];
    a.lk = (int)k->shape[1];
    a.dh = (int)(q->shape[2] / n_heads);
    a.dv = (int)(v->shape[2] / n_heads);
    a.ks = key_stride(a.dh, es);
    a.q_row = q->shape[2];
    a.k_row = k->shape[2];
    a.v_row = v->shape[2];
    a.o_row = o->shape[2];
    a.qscale = scale * 1.44269504088896341f;
    a.causal = causal;
    if (nb == 0 || a.lq == 0)
        return;
    if (a.dv > ATT_MAX_DV || q->shape[1] > INT32_MAX || k->shape[1] > INT32_MAX ||
        nb > 65535 || n_heads > 65535) {
        kg_backend_fail(be, KG_ERR_UNSUPPORTED,
                        "attention: value head width %d (max %d), Lq %lld, Lk %lld, batch %lld, "
                        "%d heads exceed the CUDA kernel's limits",
                        a.dv, ATT_MAX_DV, (long long)q->shape[1], (long long)k->shape[1],
                        (long long)nb, n_heads);
        return;
    }
    smem = (size_t)ATT_BQ * a.dh * sizeof(float) + (size_t)ATT_BK * a.ks * es +
           (size_t)ATT_BK * a.dv * es;
    if (smem > (size_t)cu->smem_optin) {
        kg_backend_fail(be, KG_ERR_UNSUPPORTED,
                        "attention: head widths %d/%d need %zu bytes of shared memory, the device "
                        "allows %d",
                        a.dh, a.dv, smem, cu->smem_optin);
        return;
    }
    KG_FLOAT_DISPATCH(q->dtype, T,
                      e = attention_dispatch<T>((T *)o->data, (const T *)q->data, (const T *)k->data,
                                                (const T *)v->data,
                                                key_pad ? (const unsigned char *)key_pad->data : NULL,
                                                a, (int)nb, n_heads, smem, cu->stream));
    kg_cuda_check(be, e, "attention");
}
