/* connector.c - XConnector (see connector.h). */
#include "connector.h"

#include <string.h>

#include "weights.h"

kg_status kg_connector_config_from_json(kg_connector_config *cfg, const kg_json *j, kg_error *err)
{
    const char *what = "kg.config.connector";
    int64_t heads;
    kg_status s;

    memset(cfg, 0, sizeof *cfg);
    if ((s = kg_json_req_int(j, "in", &cfg->in, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "out", &cfg->out, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "heads", &heads, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "latent_query_num", &cfg->latents, what, err)) != KG_OK)
        return s;
    if (cfg->in < 1 || cfg->out < 1 || heads < 1 || heads > cfg->out || cfg->out % heads ||
        cfg->latents < 1)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: inconsistent in %lld / out %lld / heads %lld / latent_query_num "
                            "%lld",
                            what, (long long)cfg->in, (long long)cfg->out, (long long)heads,
                            (long long)cfg->latents);
    cfg->heads = (int)heads;
    return KG_OK;
}

static kg_status load_weights(void *model, kg_loader *L)
{
    kg_connector *m = model;
    const kg_connector_config *cfg = &m->cfg;

    kg_load(L, &m->latent_query, 2, (int64_t[]){cfg->latents, cfg->out}, "latent_query");
    kg_load_weight(L, &m->dense_w, 2, (int64_t[]){cfg->out, cfg->in}, "dense.weight");
    kg_load(L, &m->dense_b, 1, (int64_t[]){cfg->out}, "dense.bias");
    /* fairseq MHA: kdim = vdim = embed_dim, no sub-LN */
    kg_mha_load(&m->x_attn, L, "x_attn", cfg->out, cfg->heads, 0, 1e-5f);
    return L->status;
}

kg_status kg_connector_load(kg_connector *m, const kg_connector_config *cfg, kg_backend *be,
                            const kg_st_file *st, const char *prefix, kg_error *err)
{
    kg_status s;
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    s = kg_load_component(be, st, prefix, load_weights, m, &m->blob, err);
    if (s != KG_OK)
        memset(m, 0, sizeof *m);
    return s;
}

void kg_connector_free(kg_connector *m, kg_backend *be)
{
    if (!m)
        return;
    kg_weights_free(be, m->blob);
    memset(m, 0, sizeof *m);
}

void kg_connector_forward(kg_ctx *c, const kg_connector *m, kg_tensor *out,
                          const kg_tensor *features)
{
    const kg_connector_config *cfg = &m->cfg;
    size_t mark = kg_mark(c);
    int64_t n = features->shape[0], t = features->shape[1];
    kg_tensor y = kg_new3(c, n, t, cfg->out);
    kg_tensor q = kg_new3(c, n, cfg->latents, cfg->out);
    kg_tensor kv = kg_new3(c, n, t + cfg->latents, cfg->out);

    kg_linear(c, &y, features, &m->dense_w, &m->dense_b);
    kg_tap(c, &y, "dense");
    /* the latents are the queries and also attend to themselves:
     * kv = cat([image tokens, latent_query]) along the sequence */
    kg_fill(c, &q, 0.0f);
    kg_add_tile(c, &q, &q, &m->latent_query);
    kg_concat(c, &kv, &y, &q, 1);
    kg_mha_forward(c, &m->x_attn, out, &q, &kv, NULL, 0);
    kg_tap(c, out, "x_attn");
    kg_reset(c, mark);
}
