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
#include <mma.h>

#include "cuda_common.cuh"

#define ATT_WARPS 4
#define ATT_ROWS 4
#define ATT_BQ (ATT_WARPS * ATT_ROWS)
#define ATT_BK 32
#define ATT_MAX_DV 512

typedef struct att_args {
    int lq, lk, dh, dv;
    int ks;                             /* shared-memory row stride of the key tile (elements) */
    int64_t q_row, k_row, v_row, o_row; /* row strides: H * Dh, H * Dh, H * Dv, H * Dv */
    float qscale;                       /* scale * log2(e) */
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
static cudaError_t attention_cuda(T *o, const T *q, const T *k, const T *v,
                                  const unsigned char *pad, const att_args &a, int nb, int heads,
                                  size_t smem, cudaStream_t s)
{
    dim3 grid((unsigned)((a.lq + ATT_BQ - 1) / ATT_BQ), (unsigned)heads, (unsigned)nb);
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(
            attention_kernel<T, NV>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess)
            return e;
    }
    attention_kernel<T, NV><<<grid, ATT_WARPS * 32, smem, s>>>(o, q, k, v, pad, a);
    return cudaGetLastError();
}

template <typename T>
static cudaError_t attention_dispatch(T *o, const T *q, const T *k, const T *v,
                                      const unsigned char *pad, const att_args &a, int nb,
                                      int heads, size_t smem, cudaStream_t s)
{
    if (a.dv <= 64)
        return attention_cuda<T, 2>(o, q, k, v, pad, a, nb, heads, smem, s);
    if (a.dv <= 128)
        return attention_cuda<T, 4>(o, q, k, v, pad, a, nb, heads, smem, s);
    if (a.dv <= 256)
        return attention_cuda<T, 8>(o, q, k, v, pad, a, nb, heads, smem, s);
    return attention_cuda<T, 16>(o, q, k, v, pad, a, nb, heads, smem, s);
}

/* ------------------------------------------------ tensor-core version
 *
 * For F16/BF16 with padded head widths up to 256: the same online softmax,
 * with both products on the tensor cores through WMMA (16x16x16 tiles,
 * fp32 accumulation). A block of 4 warps owns 64 query rows, each warp 16;
 * key tiles hold 64 keys. Per tile a warp computes its 16 x 64 scores into
 * shared memory, two lanes per row update the running max and sum and
 * write the probabilities (in the input type, as FlashAttention does) and
 * rescale the row's fp32 output accumulator, which lives in shared memory
 * (WMMA fragments do not expose their rows), then adds P V. */
#define TC_BQ 64
#define TC_BK 64
#define TC_MAX_D 256

typedef struct tc_args {
    int lq, lk, dh, dv, dhp, dvp; /* widths and their multiples of 16 */
    int64_t q_row, k_row, v_row, o_row;
    float qscale;
    int causal;
} tc_args;

static size_t tc_round(size_t n)
{
    return (n + 127) / 128 * 128;
}

/* byte offsets of the shared-memory regions: Q, K, V, S, P, O; [6] = total */
static void tc_layout(int dhp, int dvp, size_t es, size_t off[7])
{
    off[0] = 0;
    off[1] = off[0] + tc_round((size_t)TC_BQ * dhp * es);
    off[2] = off[1] + tc_round((size_t)TC_BK * dhp * es);
    off[3] = off[2] + tc_round((size_t)TC_BK * dvp * es);
    off[4] = off[3] + tc_round((size_t)TC_BQ * TC_BK * sizeof(float));
    off[5] = off[4] + tc_round((size_t)TC_BQ * TC_BK * es);
    off[6] = off[5] + tc_round((size_t)TC_BQ * dvp * sizeof(float));
}

template <typename T>
static __global__ void __launch_bounds__(128)
    attention_tc_kernel(T *o, const T *q, const T *k, const T *v, const unsigned char *pad,
                        tc_args a, size_t off1, size_t off2, size_t off3, size_t off4, size_t off5)
{
    using namespace nvcuda;
    extern __shared__ __align__(128) unsigned char tc_smem[];
    T *qs = (T *)tc_smem;          /* [TC_BQ][dhp] */
    T *ks = (T *)(tc_smem + off1); /* [TC_BK][dhp] */
    T *vs = (T *)(tc_smem + off2); /* [TC_BK][dvp] */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *sw = (float *)(tc_smem + off3) + warp * 16 * TC_BK; /* this warp's [16][TC_BK] */
    T *pw = (T *)(tc_smem + off4) + warp * 16 * TC_BK;         /* [16][TC_BK] */
    float *ow = (float *)(tc_smem + off5) + warp * 16 * a.dvp; /* [16][dvp] */
    const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * TC_BQ;
    const T *qb = q + (int64_t)b * a.lq * a.q_row + (int64_t)h * a.dh;
    const T *kb = k + (int64_t)b * a.lk * a.k_row + (int64_t)h * a.dh;
    const T *vb = v + (int64_t)b * a.lk * a.v_row + (int64_t)h * a.dv;
    const unsigned char *pb = pad ? pad + (int64_t)b * a.lk : NULL;
    const T zero = kg_st<T>(0.0f);
    /* two lanes per row: row r, columns half, half + 2, ... */
    const int r = lane >> 1, half = lane & 1, i = i0 + warp * 16 + r;
    float m = -INFINITY, l = 0.0f;
    int kend = a.lk;

    for (int t = threadIdx.x; t < TC_BQ * a.dhp; t += blockDim.x) {
        int row = t / a.dhp, d = t % a.dhp;
        qs[t] = i0 + row < a.lq && d < a.dh ? qb[(int64_t)(i0 + row) * a.q_row + d] : zero;
    }
    for (int t = lane; t < 16 * a.dvp; t += 32)
        ow[t] = 0.0f;
    if (a.causal && i0 + TC_BQ < kend)
        kend = i0 + TC_BQ;

    for (int j0 = 0; j0 < kend; j0 += TC_BK) {
        __syncthreads(); /* every warp is done with the previous tile (and qs is written) */
        for (int t = threadIdx.x; t < TC_BK * a.dhp; t += blockDim.x) {
            int row = t / a.dhp, d = t % a.dhp;
            ks[t] = j0 + row < a.lk && d < a.dh ? kb[(int64_t)(j0 + row) * a.k_row + d] : zero;
        }
        for (int t = threadIdx.x; t < TC_BK * a.dvp; t += blockDim.x) {
            int row = t / a.dvp, d = t % a.dvp;
            vs[t] = j0 + row < a.lk && d < a.dv ? vb[(int64_t)(j0 + row) * a.v_row + d] : zero;
        }
        __syncthreads();

        /* S[16][64] = Q_w K^T: B(kk, n) = K[n][kk], column-major with ld dhp */
        for (int nb = 0; nb < TC_BK / 16; nb++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < a.dhp; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
                wmma::load_matrix_sync(fa, qs + (warp * 16) * a.dhp + kk, a.dhp);
                wmma::load_matrix_sync(fb, ks + (nb * 16) * a.dhp + kk, a.dhp);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(sw + nb * 16, acc, TC_BK, wmma::mem_row_major);
        }
        __syncwarp();

        /* online softmax of row r over this tile's 64 keys */
        {
            float mt = -INFINITY, sum = 0.0f, mx, corr;
            for (int c = half; c < TC_BK; c += 2) {
                int j = j0 + c;
                bool ok = j < a.lk && !(pb && pb[j]) && (!a.causal || j <= i);
                float sv = ok ? sw[r * TC_BK + c] * a.qscale : -INFINITY;
                sw[r * TC_BK + c] = sv;
                mt = fmaxf(mt, sv);
            }
            mt = fmaxf(mt, __shfl_xor_sync(KG_FULL_MASK, mt, 1));
            mx = fmaxf(m, mt);
            corr = mx == -INFINITY ? 1.0f : exp2f(m - mx);
            for (int c = half; c < TC_BK; c += 2) {
                float sv = sw[r * TC_BK + c];
                float p = mx == -INFINITY || sv == -INFINITY ? 0.0f : exp2f(sv - mx);
                pw[r * TC_BK + c] = kg_st<T>(p);
                sum += p;
            }
            sum += __shfl_xor_sync(KG_FULL_MASK, sum, 1);
            l = l * corr + sum;
            m = mx;
            for (int c = half; c < a.dvp; c += 2)
                ow[r * a.dvp + c] *= corr;
        }
        __syncwarp();

        /* O_w[16][dvp] += P_w[16][64] V[64][dvp] */
        for (int nb = 0; nb < a.dvp / 16; nb++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, ow + nb * 16, a.dvp, wmma::mem_row_major);
            for (int kk = 0; kk < TC_BK; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, pw + kk, TC_BK);
                wmma::load_matrix_sync(fb, vs + kk * a.dvp + nb * 16, a.dvp);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(ow + nb * 16, acc, a.dvp, wmma::mem_row_major);
        }
        __syncwarp();
    }

    if (i < a.lq) {
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        T *orow = o + ((int64_t)b * a.lq + i) * a.o_row + (int64_t)h * a.dv;
        for (int c = half; c < a.dv; c += 2)
            orow[c] = kg_st<T>(ow[r * a.dvp + c] * inv);
    }
}

template <typename T>
static cudaError_t attention_tc_cuda(T *o, const T *q, const T *k, const T *v,
                                     const unsigned char *pad, const tc_args &a, int nb, int heads,
                                     const size_t off[7], cudaStream_t s)
{
    dim3 grid((unsigned)((a.lq + TC_BQ - 1) / TC_BQ), (unsigned)heads, (unsigned)nb);
    if (off[6] > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(
            attention_tc_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)off[6]);
        if (e != cudaSuccess)
            return e;
    }
    attention_tc_kernel<T>
        <<<grid, 128, off[6], s>>>(o, q, k, v, pad, a, off[1], off[2], off[3], off[4], off[5]);
    return cudaGetLastError();
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

static void attention(kg_backend *be, kg_tensor *o, const kg_tensor *q, const kg_tensor *k,
                      const kg_tensor *v, const kg_tensor *key_pad, int n_heads, float scale,
                      int causal, int tensor_cores)
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
    if (a.dv > ATT_MAX_DV || q->shape[1] > INT32_MAX || k->shape[1] > INT32_MAX || nb > 65535 ||
        n_heads > 65535) {
        kg_backend_fail(be, KG_ERR_UNSUPPORTED,
                        "attention: value head width %d (max %d), Lq %lld, Lk %lld, batch %lld, "
                        "%d heads exceed the CUDA kernel's limits",
                        a.dv, ATT_MAX_DV, (long long)q->shape[1], (long long)k->shape[1],
                        (long long)nb, n_heads);
        return;
    }
    if (q->dtype != KG_F32 && tensor_cores) {
        tc_args t;
        size_t off[7];
        t.lq = a.lq;
        t.lk = a.lk;
        t.dh = a.dh;
        t.dv = a.dv;
        t.dhp = (a.dh + 15) / 16 * 16;
        t.dvp = (a.dv + 15) / 16 * 16;
        t.q_row = a.q_row;
        t.k_row = a.k_row;
        t.v_row = a.v_row;
        t.o_row = a.o_row;
        t.qscale = a.qscale;
        t.causal = causal;
        tc_layout(t.dhp, t.dvp, es, off);
        if (t.dhp <= TC_MAX_D && t.dvp <= TC_MAX_D && off[6] <= (size_t)cu->smem_optin) {
            const unsigned char *pd = key_pad ? (const unsigned char *)key_pad->data : NULL;
            if (q->dtype == KG_F16)
                e = attention_tc_cuda<__half>((__half *)o->data, (const __half *)q->data,
                                              (const __half *)k->data, (const __half *)v->data, pd,
                                              t, (int)nb, n_heads, off, cu->stream);
            else
                e = attention_tc_cuda<__nv_bfloat16>(
                    (__nv_bfloat16 *)o->data, (const __nv_bfloat16 *)q->data,
                    (const __nv_bfloat16 *)k->data, (const __nv_bfloat16 *)v->data, pd, t, (int)nb,
                    n_heads, off, cu->stream);
            kg_cuda_check(be, e, "attention (tensor cores)");
            return;
        }
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
                      e = attention_dispatch<T>(
                          (T *)o->data, (const T *)q->data, (const T *)k->data, (const T *)v->data,
                          key_pad ? (const unsigned char *)key_pad->data : NULL, a, (int)nb,
                          n_heads, smem, cu->stream));
    kg_cuda_check(be, e, "attention");
}

extern "C" void kg_cuda_attention(kg_backend *be, kg_tensor *o, const kg_tensor *q,
                                  const kg_tensor *k, const kg_tensor *v, const kg_tensor *key_pad,
                                  int n_heads, float scale, int causal)
{
    attention(be, o, q, k, v, key_pad, n_heads, scale, causal, 1);
}

extern "C" void kg_cuda_attention_plain(kg_backend *be, kg_tensor *o, const kg_tensor *q,
                                        const kg_tensor *k, const kg_tensor *v,
                                        const kg_tensor *key_pad, int n_heads, float scale,
                                        int causal)
{
    attention(be, o, q, k, v, key_pad, n_heads, scale, causal, 0);
}
