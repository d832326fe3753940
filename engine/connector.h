/* connector.h - Kosmos-G's image connector (unilm/models/connector.py
 * XConnector): a per-token Linear from the CLIP width to the MLLM width,
 * then ONE fairseq multi-head cross-attention whose queries are the learned
 * latent rows and whose keys/values are the projected image tokens followed
 * by the latents themselves (257 + 64 keys). No residual, LayerNorm or FFN.
 * Weights: prefix "img_connector.". */
#ifndef KG_CONNECTOR_H
#define KG_CONNECTOR_H

#include <stdint.h>

#include "backend.h"
#include "json.h"
#include "mha.h"
#include "ops.h"
#include "safetensors.h"
#include "status.h"
#include "tensor.h"

typedef struct kg_connector_config {
    int64_t in;      /* CLIP width: 1024; tiny 64 */
    int64_t out;     /* MLLM width: 2048; tiny 40 */
    int heads;       /* MLLM heads: 32; tiny 4 */
    int64_t latents; /* latent_query_num: 64 (= image slots per image in the prompt) */
} kg_connector_config;

/* Reads kg.config.connector: {"in","out","heads","latent_query_num"}. */
kg_status kg_connector_config_from_json(kg_connector_config *cfg, const kg_json *j, kg_error *err);

typedef struct kg_connector {
    kg_connector_config cfg;
    kg_tensor latent_query; /* [L, D]   latent_query */
    kg_tensor dense_w;      /* [D, Din] dense.weight */
    kg_tensor dense_b;      /* [D]      dense.bias */
    kg_mha x_attn;          /*          x_attn.{q,k,v,out}_proj (fairseq, biases) */
    void *blob;
} kg_connector;

/* prefix: "img_connector." in the model file. */
kg_status kg_connector_load(kg_connector *m, const kg_connector_config *cfg, kg_backend *be,
                            const kg_st_file *st, const char *prefix, kg_error *err);
void kg_connector_free(kg_connector *m, kg_backend *be);

/* out [N, L, D] for CLIP features [N, T, Din] (T = 257 for ViT-L/14).
 * Taps: dense [N, T, D], x_attn [N, L, D]. */
void kg_connector_forward(kg_ctx *c, const kg_connector *m, kg_tensor *out,
                          const kg_tensor *features);

#endif
