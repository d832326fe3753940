/* sd_blocks.c - ResnetBlock2D, Upsample2D and the 1x1-conv linear view
 * (diffusers 0.21.4 models/resnet.py). */
#include "sd_blocks.h"

kg_status kg_sd_resnet_load(kg_sd_resnet *r, kg_loader *L, const char *path, int64_t in,
                            int64_t out, int64_t temb_channels, int groups, float eps)
{
    r->in = in;
    r->out = out;
    r->groups = groups;
    r->eps = eps;
    r->has_temb = temb_channels > 0;
    r->has_shortcut = in != out;
    kg_load(L, &r->norm1_w, 1, (int64_t[]){in}, "%s.norm1.weight", path);
    kg_load(L, &r->norm1_b, 1, (int64_t[]){in}, "%s.norm1.bias", path);
    kg_load_weight(L, &r->conv1_w, 4, (int64_t[]){out, in, 3, 3}, "%s.conv1.weight", path);
    kg_load(L, &r->conv1_b, 1, (int64_t[]){out}, "%s.conv1.bias", path);
    if (r->has_temb) {
        kg_load_weight(L, &r->temb_w, 2, (int64_t[]){out, temb_channels}, "%s.time_emb_proj.weight",
                       path);
        kg_load(L, &r->temb_b, 1, (int64_t[]){out}, "%s.time_emb_proj.bias", path);
    }
    kg_load(L, &r->norm2_w, 1, (int64_t[]){out}, "%s.norm2.weight", path);
    kg_load(L, &r->norm2_b, 1, (int64_t[]){out}, "%s.norm2.bias", path);
    kg_load_weight(L, &r->conv2_w, 4, (int64_t[]){out, out, 3, 3}, "%s.conv2.weight", path);
    kg_load(L, &r->conv2_b, 1, (int64_t[]){out}, "%s.conv2.bias", path);
    if (r->has_shortcut) {
        kg_load_weight(L, &r->short_w, 4, (int64_t[]){out, in, 1, 1}, "%s.conv_shortcut.weight",
                       path);
        kg_load(L, &r->short_b, 1, (int64_t[]){out}, "%s.conv_shortcut.bias", path);
    }
    return L->status;
}

void kg_sd_resnet_forward(kg_ctx *c, const kg_sd_resnet *r, kg_tensor *out, const kg_tensor *x,
                          const kg_tensor *temb_act)
{
    int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
    size_t mark = kg_mark(c);
    kg_tensor t = kg_new4(c, B, r->in, H, W);
    kg_tensor h = kg_new4(c, B, r->out, H, W);

    kg_group_norm_silu(c, &t, x, &r->norm1_w, &r->norm1_b, r->groups, r->eps);
    kg_conv2d(c, &h, &t, &r->conv1_w, &r->conv1_b, 1, 1);
    if (r->has_temb) {
        kg_tensor p = kg_new2(c, B, r->out); /* [B, out], added over H x W */
        kg_linear(c, &p, temb_act, &r->temb_w, &r->temb_b);
        kg_add_spread(c, &h, &h, &p);
    }
    /* GN1's output is dead after conv1: GN2's output reuses its memory unless the
     * block widens (at 512x512 in the VAE each such map is 134 MiB per image) */
    t = r->in >= r->out ? kg_tensor_make(t.data, t.dtype, 4, (int64_t[]){B, r->out, H, W})
                        : kg_new4(c, B, r->out, H, W);
    kg_group_norm_silu(c, &t, &h, &r->norm2_w, &r->norm2_b, r->groups, r->eps);
    kg_conv2d(c, out, &t, &r->conv2_w, &r->conv2_b, 1, 1);
    if (r->has_shortcut) {
        kg_conv2d(c, &h, x, &r->short_w, &r->short_b, 1, 0);
        kg_add(c, out, out, &h);
    } else {
        kg_add(c, out, out, x);
    }
    kg_reset(c, mark);
}

void kg_sd_upsample_forward(kg_ctx *c, kg_tensor *out, const kg_tensor *x, const kg_tensor *w,
                            const kg_tensor *b)
{
    size_t mark = kg_mark(c);
    kg_tensor u = kg_new4(c, x->shape[0], x->shape[1], out->shape[2], out->shape[3]);
    kg_upsample_nearest(c, &u, x);
    kg_conv2d(c, out, &u, w, b, 1, 1);
    kg_reset(c, mark);
}

void kg_sd_linear_any(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                      const kg_tensor *b)
{
    kg_tensor w2 = kg_tensor_reshape(w, 2, (int64_t[]){w->shape[0], w->shape[1]});
    kg_linear(c, y, x, &w2, b);
}
