/* gemm.c - linear layers through cuBLASLt: y = x w^T (+ b) with the bias in
 * the epilogue, fp32 accumulation (CUBLAS_COMPUTE_32F, which also keeps
 * TF32 out of the F32 mode).
 *
 * Row-major y[M, N] is column-major y^T [N, M]; with w[N, K] read as the
 * column-major [K, N] matrix and transposed, y^T = op(w) x^T, so one GEMM
 * covers every leading batch dim. The heuristic's algorithm is cached per
 * (M, N, K, bias, pointer alignment) in a fixed table; descriptors live on
 * the stack (the *Init calls allocate nothing). Shapes cuBLASLt declines
 * go to the plain kernel of gemm_fallback.cu. */
#include <stdint.h>
#include <string.h>

#include "cuda_kernels.h"

static cudaDataType_t cuda_type(kg_dtype dt)
{
    return dt == KG_F16 ? CUDA_R_16F : dt == KG_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

/* Largest power of two (<= 256) dividing every pointer: cuBLASLt algorithms
 * assume 256-byte alignment unless told otherwise, and views from
 * kg_tensor_rows need not be aligned. */
static unsigned alignment(const void *a, const void *b, const void *c, const void *d)
{
    uintptr_t v = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)(d ? d : a) | 256u;
    return (unsigned)(v & (~v + 1));
}

#define LT(call, what)                                                                \
    do {                                                                              \
        cublasStatus_t s_ = (call);                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                            \
            kg_backend_fail(be, KG_ERR_DEVICE, "linear [%lld x %lld x %lld]: %s: %s", \
                            (long long)m, (long long)n, (long long)k, what,           \
                            cublasLtGetStatusString(s_));                             \
            return;                                                                   \
        }                                                                             \
    } while (0)

void kg_cuda_linear(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                    const kg_tensor *b)
{
    kg_cuda *cu = kg_cuda_of(be);
    int64_t k = x->shape[x->ndim - 1], n = w->shape[0], m = kg_tensor_numel(x) / k;
    cudaDataType_t dt = cuda_type(x->dtype);
    cublasLtMatmulDescOpaque_t desc_mem;
    cublasLtMatrixLayoutOpaque_t a_mem, b_mem, c_mem;
    cublasLtMatmulPreferenceOpaque_t pref_mem;
    cublasLtMatmulDesc_t desc = &desc_mem;
    cublasLtMatrixLayout_t la = &a_mem, lb = &b_mem, lc = &c_mem;
    cublasLtMatmulPreference_t pref = &pref_mem;
    cublasOperation_t opa = CUBLAS_OP_T, opb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = b ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    const void *bias = b ? b->data : NULL;
    unsigned align = alignment(x->data, w->data, y->data, bias);
    uint64_t ws = KG_CUDA_LT_WS_BYTES;
    uint32_t al = align;
    float alpha = 1.0f, beta = 0.0f;
    kg_cuda_gemm_plan *plan = NULL;
    cublasLtMatmulAlgo_t algo;

    if (m == 0 || n == 0)
        return;
    LT(cublasLtMatmulDescInit(desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul descriptor");
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa),
       "transa");
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb),
       "transb");
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi),
       "epilogue");
    if (b)
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                          sizeof bias),
           "bias pointer");
    LT(cublasLtMatrixLayoutInit(la, dt, (uint64_t)k, (uint64_t)n, k), "layout of w");
    LT(cublasLtMatrixLayoutInit(lb, dt, (uint64_t)k, (uint64_t)m, k), "layout of x");
    LT(cublasLtMatrixLayoutInit(lc, dt, (uint64_t)n, (uint64_t)m, n), "layout of y");

    for (int i = 0; i < cu->n_gemm; i++) {
        kg_cuda_gemm_plan *p = &cu->gemm[i];
        if (p->m == m && p->n == n && p->k == k && p->bias == (b != NULL) && p->align == align) {
            plan = p;
            break;
        }
    }
    if (plan) {
        algo = plan->algo;
    } else {
        cublasLtMatmulHeuristicResult_t res;
        int found = 0;
        LT(cublasLtMatmulPreferenceInit(pref), "preference");
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                sizeof ws),
           "workspace preference");
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                &al, sizeof al),
           "alignment preference");
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                &al, sizeof al),
           "alignment preference");
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                &al, sizeof al),
           "alignment preference");
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                &al, sizeof al),
           "alignment preference");
        /* no algorithm (odd widths, poorly aligned views): the plain kernel */
        if (cublasLtMatmulAlgoGetHeuristic(cu->lt, desc, la, lb, lc, lc, pref, 1, &res, &found) !=
                CUBLAS_STATUS_SUCCESS ||
            found < 1) {
            kg_cuda_gemm_simple(be, y, x, w, b);
            return;
        }
        algo = res.algo;
        if (cu->n_gemm < KG_CUDA_GEMM_PLANS) {
            plan = &cu->gemm[cu->n_gemm++];
            plan->m = m;
            plan->n = n;
            plan->k = k;
            plan->bias = b != NULL;
            plan->align = align;
            plan->algo = algo;
        }
    }
    LT(cublasLtMatmul(cu->lt, desc, &alpha, w->data, la, x->data, lb, &beta, y->data, lc, y->data,
                      lc, &algo, cu->lt_ws, KG_CUDA_LT_WS_BYTES, cu->stream),
       "cublasLtMatmul");
}
