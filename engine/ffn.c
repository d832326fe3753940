/* ffn.c - torchscale sub-LN FeedForwardNetwork (see ffn.h). GELU is the exact
 * erf form: torchscale computes it as F.gelu(x.float()). */
#include "ffn.h"

void kg_ffn_load(kg_ffn *f, kg_loader *L, const char *layer, int64_t dim, int64_t hidden,
                 float ln_eps)
{
    const int64_t d[1] = {dim}, h[1] = {hidden};
    const int64_t fc1[2] = {hidden, dim}, fc2[2] = {dim, hidden};

    f->dim = dim;
    f->hidden = hidden;
    f->ln_eps = ln_eps;
    kg_load(L, &f->ln_w, 1, d, "%s.final_layer_norm.weight", layer);
    kg_load(L, &f->ln_b, 1, d, "%s.final_layer_norm.bias", layer);
    kg_load_weight(L, &f->fc1_w, 2, fc1, "%s.ffn.fc1.weight", layer);
    kg_load(L, &f->fc1_b, 1, h, "%s.ffn.fc1.bias", layer);
    kg_load(L, &f->mid_ln_w, 1, h, "%s.ffn.ffn_layernorm.weight", layer);
    kg_load(L, &f->mid_ln_b, 1, h, "%s.ffn.ffn_layernorm.bias", layer);
    kg_load_weight(L, &f->fc2_w, 2, fc2, "%s.ffn.fc2.weight", layer);
    kg_load(L, &f->fc2_b, 1, d, "%s.ffn.fc2.bias", layer);
}

void kg_ffn_forward(kg_ctx *c, const kg_ffn *f, kg_tensor *x)
{
    size_t mark = kg_mark(c);
    kg_tensor h = kg_new3(c, x->shape[0], x->shape[1], f->dim);
    kg_tensor u = kg_new3(c, x->shape[0], x->shape[1], f->hidden);

    kg_layer_norm(c, &h, x, &f->ln_w, &f->ln_b, f->ln_eps);
    kg_linear(c, &u, &h, &f->fc1_w, &f->fc1_b);
    kg_gelu(c, &u, &u);
    kg_layer_norm(c, &u, &u, &f->mid_ln_w, &f->mid_ln_b, f->ln_eps);
    kg_linear(c, &h, &u, &f->fc2_w, &f->fc2_b);
    kg_add(c, x, x, &h);
    kg_reset(c, mark);
}
