/* control_net.c - the public ControlNet handle: a file written by
 * kosmosg-convert --controlnet, checked against the model's U-Net and loaded
 * into a weight store of its own, of the model's backend kind (the shared model
 * is never written to). Like the model, it keeps no reference to its file once
 * loaded. */
#include <stdlib.h>
#include <string.h>

#include "model.h"

void kg_control_init(kg_control *c)
{
    memset(c, 0, sizeof *c);
    c->scale = 1.0f;
    c->guidance_start = 0.0f;
    c->guidance_end = 1.0f;
    c->canny_low = 100.0f;
    c->canny_high = 200.0f;
}

kg_status kg_control_net_open(kg_control_net **out, kg_model *m, const char *path, kg_error *err)
{
    kg_control_net *cn;
    kg_controlnet_config cfg;
    kg_st_file *f = NULL;
    kg_json *j = NULL;
    const char *kind, *ver, *text;
    kg_status st;

    *out = NULL;
    if (!m || !path || !*path)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "ControlNet: no model or no file given");
    cn = calloc(1, sizeof *cn);
    if (!cn)
        return kg_error_set(err, KG_ERR_NOMEM, "%s: no memory for the ControlNet", path);
    cn->m = m;
    st = kg_model_store_new(m, &cn->store, err);
    if (st == KG_OK)
        st = kg_st_open(&f, path, err);
    if (st != KG_OK)
        goto fail;
    kind = kg_st_metadata(f, "kg.kind");
    ver = kg_st_metadata(f, "kg.format_version");
    if (!kind || strcmp(kind, "controlnet")) {
        st = kg_error_set(err, KG_ERR_FORMAT,
                          "%s is not a ControlNet file (%s); convert a ControlNet with "
                          "kosmosg-convert --controlnet",
                          path, ver ? "it is a Kosmos-G model file" : "no kg.kind metadata");
        goto fail;
    }
    if (!ver || strcmp(ver, KG_FORMAT_VERSION)) {
        st = kg_error_set(err, KG_ERR_VERSION,
                          "%s: format version %s, this build reads version %s; re-run "
                          "kosmosg-convert --controlnet of this version",
                          path, ver ? ver : "(none)", KG_FORMAT_VERSION);
        goto fail;
    }
    text = kg_st_metadata(f, "kg.config.controlnet");
    if (!text) {
        st = kg_error_set(err, KG_ERR_FORMAT, "%s: no kg.config.controlnet metadata", path);
        goto fail;
    }
    st = kg_json_parse(&j, text, strlen(text), "kg.config.controlnet", err);
    if (st == KG_OK)
        st = kg_controlnet_config_from_json(&cfg, j, err);
    kg_json_free(j);
    if (st == KG_OK)
        st = kg_controlnet_check_unet(&cfg, &m->unet.cfg, err);
    if (st == KG_OK && cfg.cond_channels != 3)
        st = kg_error_set(err, KG_ERR_UNSUPPORTED,
                          "the ControlNet takes %lld-channel control maps; only RGB (3) maps are "
                          "supported",
                          (long long)cfg.cond_channels);
    if (st == KG_OK && (1 << (cfg.n_embed - 1)) != m->vae_factor)
        st = kg_error_set(err, KG_ERR_FORMAT,
                          "its control image is %dx the latent, the model's VAE factor is %d",
                          1 << (cfg.n_embed - 1), m->vae_factor);
    if (st == KG_OK)
        st = kg_controlnet_load(&cn->net, &cfg, cn->store, f, "controlnet.", err);
    if (st == KG_OK) {
        st = kg_st_check_unchanged(f, err);
        if (st != KG_OK)
            kg_controlnet_free(&cn->net, cn->store);
    }
    if (st != KG_OK) {
        kg_error_prefix(err, "%s", path);
        goto fail;
    }
    kg_st_close(f);
    *out = cn;
    return KG_OK;
fail:
    kg_st_close(f);
    kg_backend_free(cn->store);
    free(cn);
    return st;
}

void kg_control_net_close(kg_control_net *cn)
{
    if (!cn)
        return;
    kg_controlnet_free(&cn->net, cn->store);
    kg_backend_free(cn->store);
    free(cn);
}
