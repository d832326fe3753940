/* elementwise.cu - activations, GEGLU, broadcast add/mul, axpby, fill. */
#include "cuda_common.cuh"

#define EW_THREADS 256

static __device__ __forceinline__ float gelu(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

static __device__ __forceinline__ float sigmoid_scaled(float x, float k)
{
    return x / (1.0f + expf(-k * x));
}

template <typename T> static __global__ void activation_kernel(T *y, const T *x, int64_t n, int act)
{
    KG_GRID_STRIDE(i, n)
    {
        float v = kg_ld(x[i]);
        v = act == KG_ACT_GELU         ? gelu(v)
            : act == KG_ACT_QUICK_GELU ? sigmoid_scaled(v, 1.702f)
                                       : sigmoid_scaled(v, 1.0f);
        y[i] = kg_st<T>(v);
    }
}

template <typename T>
static void activation_cuda(T *y, const T *x, int64_t n, int act, cudaStream_t s)
{
    activation_kernel<T><<<kg_grid(n, EW_THREADS), EW_THREADS, 0, s>>>(y, x, n, act);
}

extern "C" void kg_cuda_activation(kg_backend *be, kg_tensor *y, const kg_tensor *x, kg_act act)
{
    int64_t n = kg_tensor_numel(x);
    if (n == 0)
        return;
    KG_FLOAT_DISPATCH(
        x->dtype, T,
        activation_cuda<T>((T *)y->data, (const T *)x->data, n, (int)act, kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "activation");
}

/* x [rows, 2h] -> y [rows, h] = x[:, :h] * gelu(x[:, h:]) */
template <typename T> static __global__ void geglu_kernel(T *y, const T *x, int64_t n, int64_t h)
{
    KG_GRID_STRIDE(i, n)
    {
        int64_t r = i / h, c = i % h;
        const T *xr = x + r * 2 * h;
        y[i] = kg_st<T>(kg_ld(xr[c]) * gelu(kg_ld(xr[h + c])));
    }
}

template <typename T> static void geglu_cuda(T *y, const T *x, int64_t n, int64_t h, cudaStream_t s)
{
    geglu_kernel<T><<<kg_grid(n, EW_THREADS), EW_THREADS, 0, s>>>(y, x, n, h);
}

extern "C" void kg_cuda_geglu(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    int64_t n = kg_tensor_numel(y), h = y->shape[y->ndim - 1];
    if (n == 0)
        return;
    KG_FLOAT_DISPATCH(
        x->dtype, T, geglu_cuda<T>((T *)y->data, (const T *)x->data, n, h, kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "geglu");
}

/* b index of element i: same i, tile i % nb, spread i / inner */
template <typename T>
static __global__ void binary_kernel(T *y, const T *a, const T *b, int64_t n, int64_t nb,
                                     int64_t inner, int mul, int bcast)
{
    KG_GRID_STRIDE(i, n)
    {
        int64_t j = bcast == KG_BCAST_SAME ? i : bcast == KG_BCAST_TILE ? i % nb : i / inner;
        float u = kg_ld(a[i]), v = kg_ld(b[j]);
        y[i] = kg_st<T>(mul ? u * v : u + v);
    }
}

template <typename T>
static void binary_cuda(T *y, const T *a, const T *b, int64_t n, int64_t nb, int mul, int bcast,
                        cudaStream_t s)
{
    binary_kernel<T>
        <<<kg_grid(n, EW_THREADS), EW_THREADS, 0, s>>>(y, a, b, n, nb, n / nb, mul, bcast);
}

extern "C" void kg_cuda_binary(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b,
                               kg_binary_op op, kg_bcast bcast)
{
    int64_t n = kg_tensor_numel(a), nb = kg_tensor_numel(b);
    if (n == 0 || nb == 0)
        return;
    KG_FLOAT_DISPATCH(a->dtype, T,
                      binary_cuda<T>((T *)y->data, (const T *)a->data, (const T *)b->data, n, nb,
                                     op == KG_BIN_MUL, (int)bcast, kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "binary");
}

/* b may be NULL: y = alpha a */
template <typename T>
static __global__ void axpby_kernel(T *y, float alpha, const T *a, float beta, const T *b,
                                    int64_t n)
{
    KG_GRID_STRIDE(i, n)
    y[i] = kg_st<T>(b ? alpha * kg_ld(a[i]) + beta * kg_ld(b[i]) : alpha * kg_ld(a[i]));
}

template <typename T>
static void axpby_cuda(T *y, float alpha, const T *a, float beta, const T *b, int64_t n,
                       cudaStream_t s)
{
    axpby_kernel<T><<<kg_grid(n, EW_THREADS), EW_THREADS, 0, s>>>(y, alpha, a, beta, b, n);
}

extern "C" void kg_cuda_axpby(kg_backend *be, kg_tensor *y, float alpha, const kg_tensor *a,
                              float beta, const kg_tensor *b)
{
    int64_t n = kg_tensor_numel(a);
    if (n == 0)
        return;
    KG_FLOAT_DISPATCH(a->dtype, T,
                      axpby_cuda<T>((T *)y->data, alpha, (const T *)a->data, beta,
                                    b ? (const T *)b->data : (const T *)NULL, n,
                                    kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "axpby");
}

template <typename T> static __global__ void fill_kernel(T *y, float value, int64_t n)
{
    KG_GRID_STRIDE(i, n)
    y[i] = kg_st<T>(value);
}

template <typename T> static void fill_cuda(T *y, float value, int64_t n, cudaStream_t s)
{
    fill_kernel<T><<<kg_grid(n, EW_THREADS), EW_THREADS, 0, s>>>(y, value, n);
}

extern "C" void kg_cuda_fill(kg_backend *be, kg_tensor *y, float value)
{
    int64_t n = kg_tensor_numel(y);
    if (n == 0)
        return;
    KG_FLOAT_DISPATCH(y->dtype, T, fill_cuda<T>((T *)y->data, value, n, kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "fill");
}
