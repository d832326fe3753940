/* mha.c - torchscale / fairseq MultiheadAttention (see mha.h). */
#include "mha.h"

#include <math.h>
#include <stdio.h>

kg_status kg_mha_load(kg_mha *a, kg_loader *L, const char *path, int64_t dim, int heads,
                      int inner_ln, float ln_eps)
{
    const int64_t wd[2] = {dim, dim}, bd[1] = {dim};

    if (heads < 1 || dim < 1 || dim % heads)
        return L->status =
                   kg_error_set(L->err, KG_ERR_INVALID_ARG,
                                "attention '%s%s': width %lld is not a multiple of %d heads",
                                L->prefix ? L->prefix : "", path, (long long)dim, heads);
    a->dim = dim;
    a->heads = heads;
    a->inner_ln = inner_ln;
    a->ln_eps = ln_eps;
    kg_load_weight(L, &a->q_w, 2, wd, "%s.q_proj.weight", path);
    kg_load(L, &a->q_b, 1, bd, "%s.q_proj.bias", path);
    kg_load_weight(L, &a->k_w, 2, wd, "%s.k_proj.weight", path);
    kg_load(L, &a->k_b, 1, bd, "%s.k_proj.bias", path);
    kg_load_weight(L, &a->v_w, 2, wd, "%s.v_proj.weight", path);
    kg_load(L, &a->v_b, 1, bd, "%s.v_proj.bias", path);
    kg_load_weight(L, &a->out_w, 2, wd, "%s.out_proj.weight", path);
    kg_load(L, &a->out_b, 1, bd, "%s.out_proj.bias", path);
    if (inner_ln) {
        kg_load(L, &a->ln_w, 1, bd, "%s.inner_attn_ln.weight", path);
        kg_load(L, &a->ln_b, 1, bd, "%s.inner_attn_ln.bias", path);
    }
    return L->status;
}

void kg_mha_forward(kg_ctx *c, const kg_mha *a, kg_tensor *out, const kg_tensor *xq,
                    const kg_tensor *xkv, const kg_tensor *key_pad, int causal)
{
    size_t mark = kg_mark(c);
    int64_t b = xq->shape[0], lq = xq->shape[1], lk = xkv->shape[1];
    /* torchscale multiplies q by head_dim^-0.5 before q k^T; same product */
    float scale = (float)(1.0 / sqrt((double)(a->dim / a->heads)));
    kg_tensor q = kg_new3(c, b, lq, a->dim);
    kg_tensor k = kg_new3(c, b, lk, a->dim);
    kg_tensor v = kg_new3(c, b, lk, a->dim);
    kg_tensor o = kg_new3(c, b, lq, a->dim);

    kg_linear(c, &q, xq, &a->q_w, &a->q_b);
    kg_linear(c, &k, xkv, &a->k_w, &a->k_b);
    kg_linear(c, &v, xkv, &a->v_w, &a->v_b);
    kg_attention(c, &o, &q, &k, &v, key_pad, a->heads, scale, causal);
    if (a->inner_ln)
        kg_layer_norm(c, &o, &o, &a->ln_w, &a->ln_b, a->ln_eps);
    kg_linear(c, out, &o, &a->out_w, &a->out_b);
    kg_reset(c, mark);
}
