/*
 * hadal/gen.h - random-weight checkpoints in the official DeepSeek-V4 layout.
 *
 * hd_gen_model writes config.json (Hub form), model.safetensors.index.json and shards
 * model-NNNNN-of-MMMMM.safetensors holding every tensor of hd_inv_init's inventory, in the
 * official formats: FP8 e4m3 + 128x128 e8m0 block scales (scale = 2^ceil(log2(amax/448))),
 * FP4 e2m1 pairs (low nibble first) + e8m0 per 32 inputs (scale = 2^ceil(log2(amax/6))),
 * bf16 / fp32 / int64 as spec §6.2 lists. Values follow spec §9.3 (weights N(0, 0.02),
 * norms 1 + N(0, 0.1), ape N(0, 0.5), sinks N(0, 1), hc base N(0, 0.5), hc scale U(0.5, 1.5),
 * gate bias N(0, 0.1), tid2eid rows of k distinct experts).
 *
 * Determinism: each tensor's values come from our own PRNG seeded by (seed, tensor name,
 * 128-row band), so the bytes of a tensor do not depend on the thread count, the shard size,
 * or which subset of the model is written. Memory stays bounded (a batch of row bands), so
 * Flash/Pro-sized configs stream to disk. Not thread-safe per call; calls are independent.
 */
#ifndef HADAL_GEN_H
#define HADAL_GEN_H

#include "hadal/config.h"
#include "hadal/inventory.h"
#include "hadal/status.h"

#include <stdint.h>

#define HD_GEN_DEFAULT_SHARD_BYTES 2000000000ull /* ~2 GB per shard file */

/* Called after each file is complete: its path and size in bytes. */
typedef void (*hd_gen_file_func_t)(const char *path, uint64_t bytes, void *user);

typedef struct {
    uint64_t seed;                 /* root seed */
    const char *out_dir;           /* created if missing (one level) */
    uint64_t shard_bytes;          /* max tensor bytes per shard; 0 = HD_GEN_DEFAULT_SHARD_BYTES */
    const hd_inv_filter_t *filter; /* NULL = the whole model; else only these tensors */
    int n_threads;                 /* 0 = online CPUs, 1 = serial */
    hd_gen_file_func_t on_file;    /* (optional) NULL = silent */
    void *user;                    /* passed to on_file */
} hd_gen_params_t;

/*
 * Write the checkpoint of @cfg (validated first) under @params->out_dir. Existing files of
 * the same names are replaced. On failure @err says why. Errors: HD_ERR_INVALID_PARAM,
 * HD_ERR_FORMAT (invalid config), HD_ERR_IO, HD_ERR_NO_MEMORY.
 */
hd_status_t hd_gen_model(const hd_model_config_t *cfg, const hd_gen_params_t *params, char *err,
                         size_t err_len);

/*
 * The stored bytes of one inventory tensor @t as hd_gen_model writes them for @seed: fills
 * @out (hd_inv_nbytes(t) bytes). For a scale tensor the whole weight is regenerated, so
 * prefer hd_gen_model for bulk work. Errors: HD_ERR_INVALID_PARAM, HD_ERR_NO_MEMORY.
 */
hd_status_t hd_gen_tensor(const hd_model_config_t *cfg, uint64_t seed, const hd_inv_tensor_t *t,
                          void *out);

#endif /* HADAL_GEN_H */
