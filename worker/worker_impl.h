/*
 * worker_impl.h - private to worker/: the expert-parallel exchange of a stage row over the
 * net/ data plane (net_exchange.c), used by the worker process (worker_main.c).
 */
#ifndef HADAL_WORKER_IMPL_H
#define HADAL_WORKER_IMPL_H

#include "hadal/engine.h"
#include "hadal/net.h"

#include <stdint.h>

/*
 * One stage row's MoE dispatch/combine. Created before the engine (whose moe_exchange hook
 * is hd_wxchg_moe with this object as user data); the engine and the row's net group are
 * attached later and may be replaced (a new placement epoch) without recreating the engine.
 */
typedef struct hd_wxchg *hd_wxchg_h;

hd_status_t hd_wxchg_create(int ep, int n_experts, int top_k, int dim, hd_wxchg_h *x_p);
void hd_wxchg_destroy(hd_wxchg_h x);
/* Attach the engine whose local experts serve this row member's share (borrowed). */
void hd_wxchg_set_engine(hd_wxchg_h x, hd_engine_h eng);
/* Attach the row's group (borrowed; NULL detaches: the hook then fails with HD_ERR_REMOTE). */
void hd_wxchg_set_group(hd_wxchg_h x, hd_net_h net, hd_net_group_h row, int timeout_ms);

/* The engine's hd_moe_exchange_func_t: counts all-to-all, rows out, local experts, rows back. */
hd_status_t hd_wxchg_moe(void *user, int layer, int64_t T, const float *x, const int32_t *sel,
                         const float *wts, float *slot_out);

#endif /* HADAL_WORKER_IMPL_H */
