/* conv2d.cu - 2-d convolution through cuDNN's legacy API (NCHW, fp32
 * compute: PSEUDO_HALF / PSEUDO_BFLOAT16 configurations), then the bias.
 *
 * The algorithm is chosen once per shape with the v7 heuristic, limited to
 * the workspace allocated at creation and to GEMM-style algorithms (no FFT
 * or Winograd), and cached in a fixed table; a shape
 * or dtype cuDNN offers nothing for runs a plain direct kernel instead. The
 * F32 mode asks for FMA math so TF32 never changes the parity results. */
#include <string.h>

#include "cuda_common.cuh"

template <typename T>
static __global__ void conv_bias_kernel(T *y, const T *b, int64_t n, int64_t plane, int64_t co)
{
    KG_GRID_STRIDE(i, n)
    y[i] = kg_st<T>(kg_ld(y[i]) + kg_ld(b[i / plane % co]));
}

template <typename T>
static void conv_bias_cuda(T *y, const T *b, int64_t n, int64_t plane, int64_t co, cudaStream_t s)
{
    conv_bias_kernel<T><<<kg_grid(n, 256), 256, 0, s>>>(y, b, n, plane, co);
}

typedef struct conv_geom {
    int64_t n, ci, h, w, co, kh, kw, ho, wo;
    int stride, pad;
} conv_geom;

/* One output element per thread, bias included: the path for shapes and
 * dtypes cuDNN offers no algorithm for. */
template <typename T>
static __global__ void conv_direct_kernel(T *y, const T *x, const T *w, const T *b, conv_geom g)
{
    KG_GRID_STRIDE(i, g.n * g.co * g.ho * g.wo)
    {
        int64_t ox = i % g.wo, oy = i / g.wo % g.ho, co = i / (g.wo * g.ho) % g.co;
        int64_t n = i / (g.wo * g.ho * g.co);
        float acc = b ? kg_ld(b[co]) : 0.0f;
        for (int64_t ci = 0; ci < g.ci; ci++) {
            const T *xc = x + (n * g.ci + ci) * g.h * g.w;
            const T *wc = w + (co * g.ci + ci) * g.kh * g.kw;
            for (int64_t ky = 0; ky < g.kh; ky++) {
                int64_t iy = oy * g.stride - g.pad + ky;
                if (iy < 0 || iy >= g.h)
                    continue;
                for (int64_t kx = 0; kx < g.kw; kx++) {
                    int64_t ix = ox * g.stride - g.pad + kx;
                    if (ix >= 0 && ix < g.w)
                        acc += kg_ld(xc[iy * g.w + ix]) * kg_ld(wc[ky * g.kw + kx]);
                }
            }
        }
        y[i] = kg_st<T>(acc);
    }
}

template <typename T>
static void conv_direct_cuda(T *y, const T *x, const T *w, const T *b, const conv_geom &g,
                             cudaStream_t s)
{
    conv_direct_kernel<T><<<kg_grid(g.n * g.co * g.ho * g.wo, 256), 256, 0, s>>>(y, x, w, b, g);
}

static void conv_direct(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                        const kg_tensor *b, int stride, int pad)
{
    conv_geom g = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0], w->shape[2],
                   w->shape[3], y->shape[2], y->shape[3], stride,      pad};
    KG_FLOAT_DISPATCH(x->dtype, T,
                      conv_direct_cuda<T>((T *)y->data, (const T *)x->data, (const T *)w->data,
                                          b ? (const T *)b->data : (const T *)NULL, g,
                                          kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "conv2d (direct)");
}

/* GEMM-style algorithms only: FFT and Winograd transform the operands and
 * round in between (worse in fp16), so integer inputs would no longer give
 * exact sums and the parity suite could not demand them. */
static int exact_sums(cudnnConvolutionFwdAlgo_t a)
{
    return a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
           a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
           a == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
}

static cudnnDataType_t dnn_type(kg_dtype dt)
{
    return dt == KG_F16 ? CUDNN_DATA_HALF : dt == KG_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}

#define DNN(call, what)                                                                           \
    do {                                                                                          \
        cudnnStatus_t s_ = (call);                                                                \
        if (s_ != CUDNN_STATUS_SUCCESS) {                                                         \
            kg_backend_fail(                                                                      \
                be, KG_ERR_DEVICE,                                                                \
                "conv2d x [%lld, %lld, %lld, %lld] w [%lld, %lld, %lld, %lld]: %s: %s",           \
                (long long)key[0], (long long)key[1], (long long)key[2], (long long)key[3],       \
                (long long)key[4], (long long)key[1], (long long)key[5], (long long)key[6], what, \
                cudnnGetErrorString(s_));                                                         \
            return;                                                                               \
        }                                                                                         \
    } while (0)

extern "C" void kg_cuda_conv2d(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                               const kg_tensor *b, int stride, int pad)
{
    kg_cuda *cu = kg_cuda_of(be);
    int64_t key[9] = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0],
                      w->shape[2], w->shape[3], stride,      pad};
    cudnnDataType_t dt = dnn_type(x->dtype);
    cudnnMathType_t math = x->dtype == KG_F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
    kg_cuda_conv_plan *plan = NULL, fresh;
    float alpha = 1.0f, beta = 0.0f;

    DNN(cudnnSetTensor4dDescriptor(cu->x_desc, CUDNN_TENSOR_NCHW, dt, (int)key[0], (int)key[1],
                                   (int)key[2], (int)key[3]),
        "input descriptor");
    DNN(cudnnSetFilter4dDescriptor(cu->w_desc, dt, CUDNN_TENSOR_NCHW, (int)key[4], (int)key[1],
                                   (int)key[5], (int)key[6]),
        "filter descriptor");
    DNN(cudnnSetConvolution2dDescriptor(cu->conv_desc, pad, pad, stride, stride, 1, 1,
                                        CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
        "convolution descriptor");
    DNN(cudnnSetTensor4dDescriptor(cu->y_desc, CUDNN_TENSOR_NCHW, dt, (int)y->shape[0],
                                   (int)y->shape[1], (int)y->shape[2], (int)y->shape[3]),
        "output descriptor");

    for (int i = 0; i < cu->n_conv; i++)
        if (!memcmp(cu->conv[i].key, key, sizeof key)) {
            plan = &cu->conv[i];
            break;
        }
    if (!plan) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        int found = 0, pick = -1;
        memset(&fresh, 0, sizeof fresh);
        memcpy(fresh.key, key, sizeof key);
        DNN(cudnnSetConvolutionMathType(cu->conv_desc, math), "math type");
        if (cudnnGetConvolutionForwardAlgorithm_v7(cu->dnn, cu->x_desc, cu->w_desc, cu->conv_desc,
                                                   cu->y_desc, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                   &found, perf) != CUDNN_STATUS_SUCCESS)
            found = 0;
        for (int i = 0; i < found && pick < 0; i++)
            if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= KG_CUDA_DNN_WS_BYTES &&
                (x->dtype != KG_F32 || perf[i].mathType != CUDNN_TENSOR_OP_MATH) &&
                exact_sums(perf[i].algo))
                pick = i;
        if (pick < 0) {
            /* no cuDNN algorithm for this shape/dtype within the workspace */
            fresh.direct = 1;
            if (cu->n_conv < KG_CUDA_CONV_PLANS)
                cu->conv[cu->n_conv++] = fresh;
            conv_direct(be, y, x, w, b, stride, pad);
            return;
        }
        fresh.algo = perf[pick].algo;
        fresh.math = x->dtype == KG_F32 ? CUDNN_FMA_MATH : perf[pick].mathType;
        DNN(cudnnSetConvolutionMathType(cu->conv_desc, fresh.math), "math type");
        DNN(cudnnGetConvolutionForwardWorkspaceSize(cu->dnn, cu->x_desc, cu->w_desc, cu->conv_desc,
                                                    cu->y_desc, fresh.algo, &fresh.ws_bytes),
            "workspace size");
        if (fresh.ws_bytes > KG_CUDA_DNN_WS_BYTES) {
            kg_backend_fail(be, KG_ERR_DEVICE,
                            "conv2d: cuDNN algorithm %d needs %zu bytes of workspace",
                            (int)fresh.algo, fresh.ws_bytes);
            return;
        }
        plan = &fresh;
        if (cu->n_conv < KG_CUDA_CONV_PLANS)
            cu->conv[cu->n_conv++] = fresh;
    }
    if (plan->direct) {
        conv_direct(be, y, x, w, b, stride, pad);
        return;
    }
    DNN(cudnnSetConvolutionMathType(cu->conv_desc, plan->math), "math type");
    DNN(cudnnConvolutionForward(cu->dnn, &alpha, cu->x_desc, x->data, cu->w_desc, w->data,
                                cu->conv_desc, plan->algo, cu->dnn_ws, plan->ws_bytes, &beta,
                                cu->y_desc, y->data),
        "cudnnConvolutionForward");
    if (b) {
        int64_t plane = y->shape[2] * y->shape[3];
        KG_FLOAT_DISPATCH(y->dtype, T,
                          conv_bias_cuda<T>((T *)y->data, (const T *)b->data, kg_tensor_numel(y),
                                            plane, y->shape[1], cu->stream));
        kg_cuda_check_launch(be, "conv2d bias");
    }
}

extern "C" void kg_cuda_conv2d_direct(kg_backend *be, kg_tensor *y, const kg_tensor *x,
                                      const kg_tensor *w, const kg_tensor *b, int stride, int pad)
{
    conv_direct(be, y, x, w, b, stride, pad);
}
