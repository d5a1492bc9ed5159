/*
 * engine.c - engine lifetime: reads the config, opens the checkpoint (mmap), binds the
 * weights, creates the kernel backend and precomputes the two RoPE frequency tables
 * (plain theta for window-only layers and MTP; compress theta with YaRN for CSA/HCA).
 */
#include "engine_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Plain RoPE: f_p = base^(-2p/R), computed in fp32 as the reference does. */
static void rope_plain(float *f, int R, double base)
{
    for (int p = 0; p < R / 2; p++) {
        f[p] = 1.0f / powf((float)base, (float)(2 * p) / (float)R);
    }
}

/* DeepSeek YaRN: blend f and f/s with a linear ramp between the correction dims. */
static void rope_yarn(float *f, const hd_model_config_t *c)
{
    int R = c->rope_dim;
    double base = c->compress_rope_theta, L0 = c->rope_orig_max_pos;
    double lo_d = R * log(L0 / (c->beta_fast * 2.0 * M_PI)) / (2.0 * log(base));
    double hi_d = R * log(L0 / (c->beta_slow * 2.0 * M_PI)) / (2.0 * log(base));
    double lo = floor(lo_d), hi = ceil(hi_d);
    if (lo < 0) {
        lo = 0;
    }
    if (hi > R - 1) {
        hi = R - 1;
    }
    if (lo == hi) {
        hi += 0.001;
    }
    for (int p = 0; p < R / 2; p++) {
        float pf = powf((float)base, (float)(2 * p) / (float)R);
        float extra = 1.0f / pf, inter = 1.0f / ((float)c->rope_factor * pf);
        float ramp = (float)(((double)p - lo) / (hi - lo));
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        float keep = 1.0f - ramp; /* weight of the unscaled frequency */
        f[p] = inter * (1.0f - keep) + extra * keep;
    }
}

static hd_status_t engine_check_limits(hd_engine_h e)
{
    const hd_model_config_t *c = &e->cfg;
    const char *why = NULL;
    if (c->hc_mult < 1 || c->hc_mult > 4) {
        why = "hc_mult must be 1..4";
    } else if (c->head_dim > 1024 || c->index_head_dim > 1024) {
        why = "head_dim and index_head_dim must be <= 1024";
    } else if (c->rope_dim > 128 || c->rope_dim % 2) {
        why = "rope dim must be even and <= 128";
    } else if ((c->n_heads * c->head_dim) % c->o_groups) {
        why = "o_groups must divide the attention width";
    }
    for (int i = 0; why == NULL && i < c->n_layers + c->n_mtp_layers; i++) {
        if (c->compress_ratio[i] < 0 || c->compress_ratio[i] > 128) {
            why = "compress ratios must be 0..128";
        }
    }
    if (why != NULL) {
        snprintf(e->err, sizeof(e->err), "%s: %s", c->name, why);
        return HD_ERR_UNSUPPORTED;
    }
    return HD_OK;
}

hd_status_t hd_engine_create(const hd_engine_params_t *p, hd_engine_h *engine_p)
{
    hd_engine_h e;
    hd_status_t status;
    char cfg_path[1024];
    struct stat sb;

    e = hd_calloc(1, sizeof(*e), "engine");
    if (e == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    e->numerics = p->numerics;
    e->moe_exchange = p->moe_exchange;
    e->moe_user = p->moe_user;
    if (p->model_path == NULL) {
        snprintf(e->err, sizeof(e->err), "no model path given");
        status = HD_ERR_INVALID_PARAM;
        goto err;
    }
    if (p->config_path != NULL) {
        snprintf(cfg_path, sizeof(cfg_path), "%s", p->config_path);
    } else if (stat(p->model_path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(cfg_path, sizeof(cfg_path), "%s/config.json", p->model_path);
    } else {
        snprintf(cfg_path, sizeof(cfg_path), "%s", p->model_path);
    }
    status = hd_config_load(cfg_path, &e->cfg, e->err, sizeof(e->err));
    if (status != HD_OK) {
        goto err;
    }
    HD_CHECK_GOTO(engine_check_limits(e), status, err);
    status = hd_st_open(p->model_path, &e->st, e->err, sizeof(e->err));
    if (status != HD_OK) {
        goto err;
    }
    HD_CHECK_GOTO(engine_bind_weights(e, p), status, err);
    HD_CHECK_GOTO(hd_kern_backend_create("cpu", p->n_threads, &e->be), status, err);
    e->inv_freq_main = hd_calloc((size_t)e->cfg.rope_dim / 2, sizeof(float), "rope table");
    e->inv_freq_comp = hd_calloc((size_t)e->cfg.rope_dim / 2, sizeof(float), "rope table");
    if (e->inv_freq_main == NULL || e->inv_freq_comp == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto err;
    }
    rope_plain(e->inv_freq_main, e->cfg.rope_dim, e->cfg.rope_theta);
    rope_yarn(e->inv_freq_comp, &e->cfg);
    hd_info(HD_SUBSYS_MODEL, "engine ready: %s, %d layers%s, %s numerics, %.1f MiB of weights",
            e->cfg.name, e->cfg.n_layers, e->has_mtp ? " + MTP" : "",
            e->numerics == HD_NUMERICS_PLAIN ? "plain" : "official",
            (double)e->weight_bytes / 1048576.0);
    *engine_p = e;
    return HD_OK;

err:
    if (e->err[0] != '\0') {
        hd_error(HD_SUBSYS_MODEL, "%s", e->err);
    }
    if (p->err != NULL && p->err_len > 0) {
        snprintf(p->err, p->err_len, "%s", e->err[0] ? e->err : hd_status_string(status));
    }
    hd_engine_destroy(e);
    return status;
}

void hd_engine_destroy(hd_engine_h e)
{
    if (e == NULL) {
        return;
    }
    engine_free_weights(e);
    hd_kern_backend_destroy(e->be);
    if (e->st != NULL) {
        hd_st_close(e->st);
    }
    hd_free(e->inv_freq_main);
    hd_free(e->inv_freq_comp);
    hd_free(e);
}

const hd_model_config_t *hd_engine_config(hd_engine_h e)
{
    return &e->cfg;
}

bool hd_engine_last_stage(hd_engine_h e)
{
    return e->layer_hi == e->cfg.n_layers;
}

hd_numerics_t hd_engine_numerics(hd_engine_h e)
{
    return e->numerics;
}

size_t hd_engine_weight_bytes(hd_engine_h e)
{
    return e->weight_bytes;
}

size_t hd_engine_active_bytes_per_token(hd_engine_h e)
{
    return e->active_bytes;
}

void hd_engine_kern_stats(hd_engine_h e, struct hd_kern_stats *stats, bool reset)
{
    if (stats != NULL) {
        *stats = e->be->stats;
    }
    if (reset) {
        memset(&e->be->stats, 0, sizeof(e->be->stats));
    }
}

const char *hd_engine_last_error(hd_engine_h e)
{
    return e->err;
}
