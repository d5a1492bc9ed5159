/*
 * plan.c - the placement planner (hadal/plan.h, docs/PLANNER.md): model config + cluster
 * description -> PP x EP grid, balanced layer ranges, contiguous routed-expert ranges, and the
 * memory of every worker (exact checkpoint bytes from the inventory, buffer estimates, the KV
 * budget and the longest context it holds).
 *
 * Pure arithmetic: the weights come from one inventory walk per block (model/inventory.c),
 * the KV bytes from model/kv_size.c, so the planner, gen-model, the checkpoint check and the
 * KV allocator all count the same bytes. No I/O, no logging (refusals are returned in @err,
 * the caller decides whether they are errors), no global state.
 */
#include "hadal/plan.h"
#include "hadal/alloc.h"
#include "hadal/inventory.h"

#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GIB (1024.0 * 1024.0 * 1024.0)
#define ACT_BYTES 4  /* activations in buffers: fp32, as the engine computes them */
#define WIRE_BYTES 2 /* MoE dispatch/combine rows on the wire: bf16 */

static const int plan_batches[HD_PLAN_N_BATCH] = {1, 8, 64};

/* ---- sizes and rates ---- */

typedef struct {
    const char *name;
    uint64_t mul;
} plan_unit_t;

static const plan_unit_t byte_units[] = {
    {"", 1},
    {"b", 1},
    {"kb", 1000ull},
    {"mb", 1000000ull},
    {"gb", 1000000000ull},
    {"tb", 1000000000000ull},
    {"kib", 1ull << 10},
    {"mib", 1ull << 20},
    {"gib", 1ull << 30},
    {"tib", 1ull << 40},
};

static bool unit_lookup(const char *u, size_t len, uint64_t *mul)
{
    for (size_t i = 0; i < sizeof(byte_units) / sizeof(byte_units[0]); i++) {
        if (strlen(byte_units[i].name) == len && strncasecmp(byte_units[i].name, u, len) == 0) {
            *mul = byte_units[i].mul;
            return true;
        }
    }
    return false;
}

hd_status_t hd_plan_parse_bytes(const char *s, uint64_t *bytes_p)
{
    unsigned __int128 num = 0, pow10 = 1, v;
    int n_int = 0, n_frac = 0;
    uint64_t mul;
    const char *p = s;

    if (s == NULL || bytes_p == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    for (; isdigit((unsigned char)*p); p++, n_int++) {
        num = num * 10 + (unsigned)(*p - '0');
        if (num > UINT64_MAX) {
            return HD_ERR_INVALID_PARAM; /* more than 2^64 before any unit */
        }
    }
    if (*p == '.') {
        for (p++; isdigit((unsigned char)*p); p++, n_frac++) {
            if (n_frac >= 18) {
                return HD_ERR_INVALID_PARAM; /* more precision than any byte count needs */
            }
            num = num * 10 + (unsigned)(*p - '0');
            pow10 *= 10;
        }
    }
    if (n_int + n_frac == 0 || !unit_lookup(p, strlen(p), &mul)) {
        return HD_ERR_INVALID_PARAM;
    }
    if (num != 0 && num > ((unsigned __int128)UINT64_MAX * pow10) / mul + 1) {
        return HD_ERR_INVALID_PARAM;
    }
    v = num * mul;
    if (v % pow10 != 0 || v / pow10 > UINT64_MAX) {
        return HD_ERR_INVALID_PARAM; /* a fraction of a byte, or 2^64 and more */
    }
    *bytes_p = (uint64_t)(v / pow10);
    return HD_OK;
}

hd_status_t hd_plan_parse_rate(const char *s, double *bytes_per_s_p)
{
    static const plan_unit_t bit_units[] = {
        {"bit", 1},
        {"kbit", 1000ull},
        {"mbit", 1000000ull},
        {"gbit", 1000000000ull},
        {"tbit", 1000000000000ull},
    };
    char *end;
    double v;
    size_t len;
    uint64_t mul = 0;
    bool bits = false;

    if (s == NULL || bytes_per_s_p == NULL || !(isdigit((unsigned char)s[0]) || s[0] == '.')) {
        return HD_ERR_INVALID_PARAM;
    }
    v = strtod(s, &end);
    if (end == s || !isfinite(v)) {
        return HD_ERR_INVALID_PARAM;
    }
    len = strlen(end);
    if (len >= 2 && strcasecmp(end + len - 2, "/s") == 0) {
        len -= 2;
    }
    for (size_t i = 0; i < sizeof(bit_units) / sizeof(bit_units[0]); i++) {
        if (strlen(bit_units[i].name) == len && strncasecmp(bit_units[i].name, end, len) == 0) {
            mul = bit_units[i].mul;
            bits = true;
        }
    }
    if (!bits && !unit_lookup(end, len, &mul)) {
        return HD_ERR_INVALID_PARAM;
    }
    v *= (double)mul;
    if (bits) {
        v /= 8.0;
    }
    if (!(v > 0.0) || !isfinite(v)) {
        return HD_ERR_INVALID_PARAM;
    }
    *bytes_per_s_p = v;
    return HD_OK;
}

/* ---- cluster defaults ---- */

void hd_cluster_init(hd_cluster_t *cl, hd_cluster_kind_t kind)
{
    memset(cl, 0, sizeof(*cl));
    cl->kind = kind;
    cl->kv_format = HD_KV_FMT_PACKED;
    if (kind == HD_CLUSTER_CPU) {
        cl->nodes = 1;
        cl->intra_bw = 10e9;   /* shared memory between processes */
        cl->inter_bw = 1.25e9; /* 10 Gbit/s Ethernet */
        cl->reserve = 256ull << 20;
        cl->step_tokens = 256;
        cl->min_context = 4096;
        cl->ref_context = 4096;
        cl->ref_batch = 8;
        cl->flops_per_byte = 10.0;
    } else {
        cl->intra_bw = 450e9; /* NVLink 4: 900 GB/s both directions */
        cl->inter_bw = 50e9;  /* one 400 Gbit/s NIC per GPU */
        cl->reserve = 2ull << 30;
        cl->step_tokens = 2048;
        cl->min_context = 4096;
        cl->ref_context = 65536;
        cl->ref_batch = 64;
        cl->flops_per_byte = 300.0; /* H100 SXM: 989 TFLOP/s bf16 / 3.35 TB/s */
    }
}

const char *hd_plan_layer_type(int ratio)
{
    return ratio == 0 ? "SWA" : ratio == 4 ? "CSA" : "HCA";
}

/* ---- error text ---- */

static hd_status_t plan_fail(char *err, size_t err_len, hd_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static hd_status_t plan_fail(char *err, size_t err_len, hd_status_t st, const char *fmt, ...)
{
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* ---- weights per block (inventory) and the cost model ---- */

typedef struct {
    uint64_t dense;     /* bytes without routed experts */
    uint64_t expert;    /* bytes of one routed expert */
    double dense_macs;  /* multiply-adds per token of the non-expert linears */
    double expert_macs; /* of one routed expert */
} plan_block_w_t;

/* Multiply-adds per token of a linear weight, 0 for tensors that are not one. */
static double inv_macs(const hd_model_config_t *c, const hd_inv_tensor_t *t)
{
    double m;
    if (t->role == HD_INV_FP8_WEIGHT || t->role == HD_INV_FP4_WEIGHT) {
        m = (double)t->rows * (double)t->cols;
    } else if (t->role == HD_INV_PLAIN && t->ndim == 2 && t->init != HD_INV_INIT_APE &&
               t->init != HD_INV_INIT_TID2EID) {
        m = (double)t->shape[0] * (double)t->shape[1]; /* gate, compressors, weights_proj, hc */
    } else {
        return 0.0;
    }
    if (strstr(t->name, "h_proj.weight") != NULL) {
        m *= c->hc_mult; /* MTP: applied to every residual stream */
    }
    return m;
}

/* One inventory walk over block @b with only expert 0 selected. */
static hd_status_t plan_block_weights(const hd_model_config_t *c, int b, plan_block_w_t *w)
{
    bool *sel = hd_calloc((size_t)c->n_routed_experts, sizeof(*sel), "plan expert mask");
    hd_inv_filter_t f = {.layer_lo = b, .layer_hi = b + 1, .globals = HD_INV_GLOBALS_NONE};
    hd_inv_t inv;
    hd_status_t st;

    if (sel == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    sel[0] = true;
    f.experts = sel;
    st = hd_inv_init(&inv, c, &f);
    if (st == HD_OK) {
        memset(w, 0, sizeof(*w));
        for (size_t i = 0; i < inv.n; i++) {
            const hd_inv_tensor_t *t = &inv.t[i];
            if (t->expert >= 0) {
                w->expert += hd_inv_nbytes(t);
                w->expert_macs += inv_macs(c, t);
            } else {
                w->dense += hd_inv_nbytes(t);
                w->dense_macs += inv_macs(c, t);
            }
        }
        hd_inv_cleanup(&inv);
    }
    hd_free(sel);
    return st;
}

/* Bytes of embed.weight, of the head set (norm, hc_head_*, head) and the head's MACs. */
static hd_status_t plan_global_weights(const hd_model_config_t *c, uint64_t *embed, uint64_t *head,
                                       double *head_macs)
{
    hd_inv_filter_t f = {.layer_lo = 0, .layer_hi = 0, .globals = HD_INV_GLOBALS_ALL};
    hd_inv_t inv;
    hd_status_t st = hd_inv_init(&inv, c, &f);
    if (st != HD_OK) {
        return st;
    }
    *embed = *head = 0;
    *head_macs = 0.0;
    for (size_t i = 0; i < inv.n; i++) {
        const hd_inv_tensor_t *t = &inv.t[i];
        if (strcmp(t->name, "embed.weight") == 0) {
            *embed += hd_inv_nbytes(t);
        } else {
            *head += hd_inv_nbytes(t);
            *head_macs += inv_macs(c, t);
        }
    }
    hd_inv_cleanup(&inv);
    return HD_OK;
}

/*
 * Decode cost of block @b per token, in bytes read plus FLOPs / flops_per_byte: weight reads
 * shared by ref_batch tokens (routed experts: the expected number of distinct experts that
 * many tokens touch), the KV entries the token's attention reads, 2 FLOPs per multiply-add of
 * the linears (k routed experts) and of the attention (spec §7.2).
 */
static double plan_block_cost(const hd_model_config_t *c, const hd_cluster_t *cl, int b,
                              const plan_block_w_t *w, uint64_t L)
{
    int r = c->compress_ratio[b];
    double B = cl->ref_batch, E = c->n_routed_experts, k = c->n_experts_per_tok;
    double be = (double)hd_kv_entry_bytes(c, cl->kv_format);
    double bi = (double)hd_kv_index_key_bytes(c, cl->kv_format);
    double win = (double)(L < (uint64_t)c->window ? L : (uint64_t)c->window);
    double touched = E * (1.0 - pow(1.0 - k / E, B));
    double sel = 0.0, kv = win * be, flops;

    if (r == 4) {
        double n_c = (double)(L / 4);
        sel = fmin((double)c->index_topk, n_c);
        kv += n_c * bi + sel * be;
    } else if (r != 0) {
        sel = (double)(L / (uint64_t)r);
        kv += sel * be;
    }
    flops = 2.0 * (w->dense_macs + k * w->expert_macs);
    flops += 2.0 * 2.0 * c->n_heads * c->head_dim * (win + sel);
    if (r == 4) {
        flops += 2.0 * c->index_n_heads * c->index_head_dim * (double)(L / 4);
    }
    return (double)w->dense / B + touched * (double)w->expert / B + kv + flops / cl->flops_per_byte;
}

/* ---- balanced contiguous partition ---- */

/*
 * Split items w[0..n) into @pp non-empty contiguous groups: first the least possible maximum
 * group sum M (exact DP), then, among splits with every group <= M, the one with the least
 * sum of squares (so the stages that do not set the maximum are balanced too). Writes the
 * group starts to @lo (pp + 1 entries, lo[pp] = n).
 */
static hd_status_t plan_partition(const double *w, int n, int pp, int *lo)
{
    size_t cells = (size_t)(pp + 1) * (size_t)(n + 1);
    double *pre = hd_calloc((size_t)n + 1, sizeof(*pre), "plan prefix");
    double *f = hd_calloc(cells, sizeof(*f), "plan dp");
    int *arg = hd_calloc(cells, sizeof(*arg), "plan dp arg");
    hd_status_t st = HD_ERR_NO_MEMORY;
    double M, tol;

    if (pre == NULL || f == NULL || arg == NULL) {
        goto out;
    }
    for (int i = 0; i < n; i++) {
        pre[i + 1] = pre[i] + w[i];
    }
#define F(s, j) f[(size_t)(s) * (size_t)(n + 1) + (size_t)(j)]
#define A(s, j) arg[(size_t)(s) * (size_t)(n + 1) + (size_t)(j)]
    /* pass 1: F(s, j) = least max over s groups of the first j items */
    for (size_t i = 0; i < cells; i++) {
        f[i] = DBL_MAX;
    }
    F(0, 0) = 0.0;
    for (int s = 1; s <= pp; s++) {
        for (int j = s; j <= n - (pp - s); j++) {
            for (int i = s - 1; i < j; i++) {
                double v;
                if (F(s - 1, i) == DBL_MAX) {
                    continue;
                }
                v = fmax(F(s - 1, i), pre[j] - pre[i]);
                if (v < F(s, j)) {
                    F(s, j) = v;
                }
            }
        }
    }
    M = F(pp, n);
    tol = 1e-9 * (M > 1.0 ? M : 1.0);
    /* pass 2: least sum of squares with every group <= M */
    for (size_t i = 0; i < cells; i++) {
        f[i] = DBL_MAX;
    }
    F(0, 0) = 0.0;
    for (int s = 1; s <= pp; s++) {
        for (int j = s; j <= n - (pp - s); j++) {
            for (int i = s - 1; i < j; i++) {
                double g = pre[j] - pre[i], v;
                if (F(s - 1, i) == DBL_MAX || g > M + tol) {
                    continue;
                }
                v = F(s - 1, i) + g * g;
                if (v < F(s, j)) {
                    F(s, j) = v;
                    A(s, j) = i;
                }
            }
        }
    }
    lo[pp] = n;
    for (int s = pp; s >= 1; s--) {
        lo[s - 1] = A(s, lo[s]);
    }
#undef F
#undef A
    st = HD_OK;
out:
    hd_free(pre);
    hd_free(f);
    hd_free(arg);
    return st;
}

/* ---- memory of one worker ---- */

/* KV bytes of one sequence of @len tokens in blocks [lo, hi). */
static uint64_t plan_kv_bytes(const hd_model_config_t *c, int lo, int hi, uint64_t len,
                              hd_kv_format_t fmt)
{
    uint64_t s = 0;
    for (int b = lo; b < hi; b++) {
        hd_kv_bytes_t kb;
        hd_kv_layer_bytes(c, b, len, fmt, &kb);
        s += kb.total;
    }
    return s;
}

/* Longest context <= max_pos of which @batch sequences fit @budget (0 if none does). */
static uint64_t plan_max_context(const hd_model_config_t *c, int lo, int hi, hd_kv_format_t fmt,
                                 uint64_t budget, int batch, uint64_t max_pos)
{
    uint64_t a = 0, z = max_pos;
    if (plan_kv_bytes(c, lo, hi, 1, fmt) * (uint64_t)batch > budget) {
        return 0;
    }
    while (a < z) { /* invariant: a fits */
        uint64_t m = a + (z - a + 1) / 2;
        if (plan_kv_bytes(c, lo, hi, m, fmt) * (uint64_t)batch <= budget) {
            a = m;
        } else {
            z = m - 1;
        }
    }
    return a;
}

/* Activation/communication buffers of the worker of stage @s (docs/PLANNER.md). */
static void plan_buffers(const hd_model_config_t *c, const hd_cluster_t *cl, const hd_plan_t *p,
                         int s, hd_plan_buffers_t *bf)
{
    const hd_plan_stage_t *st = &p->stages[s];
    uint64_t T = cl->step_tokens, A = ACT_BYTES, d = (uint64_t)c->dim;
    uint64_t nd = (uint64_t)c->hc_mult * d, comp = 0;
    uint64_t k = (uint64_t)c->n_experts_per_tok;
    int hi = st->has_head ? c->n_layers + c->n_mtp_layers : st->layer_hi;
    int links = (s > 0) + (s < p->pp - 1);

    for (int b = st->layer_lo; b < hi; b++) {
        int r = c->compress_ratio[b];
        uint64_t w = r == 0 ? 0 : r == 4 ? 4 * (uint64_t)c->head_dim : 2 * (uint64_t)c->head_dim;
        comp = w > comp ? w : comp; /* u and z rows of the compressor */
    }
    memset(bf, 0, sizeof(*bf));
    bf->residual = T * (2 * nd + d) * A;
    bf->attention = T * A *
                    ((uint64_t)c->q_lora_rank + 2 * (uint64_t)c->n_heads * c->head_dim +
                     (uint64_t)c->o_groups * c->o_lora_rank + (uint64_t)c->head_dim + comp);
    if (st->n_csa > 0) {
        bf->indexer = T * A * ((uint64_t)c->index_n_heads * c->index_head_dim + p->ref_context / 4);
    }
    bf->moe = T * k * A * (2 * d + 2 * (uint64_t)c->moe_inter);
    bf->pipeline = (uint64_t)links * 2 * T * nd * A;
    if (st->has_head) {
        uint64_t rows = (uint64_t)cl->ref_batch * (1 + (uint64_t)c->n_mtp_layers);
        rows = rows < T ? rows : T;
        bf->logits = rows * (uint64_t)c->vocab_size * A;
    }
    bf->total = bf->residual + bf->attention + bf->indexer + bf->moe + bf->pipeline + bf->logits;
}

/* ---- one grid ---- */

typedef struct {
    plan_block_w_t bw[HD_MAX_LAYERS];
    double head_macs;
} plan_ctx_t;

/* Why @pp x @ep is not a valid grid for @c on @cl, or NULL. */
static const char *plan_grid_invalid(const hd_model_config_t *c, const hd_cluster_t *cl, int pp,
                                     int ep, char *why, size_t len)
{
    int n_dev = cl->nodes * cl->devs_per_node, E = c->n_routed_experts, q;
    if (pp < 1 || ep < 1 || (long)pp * ep != n_dev) {
        snprintf(why, len, "pp %d x ep %d is not the %d devices (%d nodes x %d)", pp, ep, n_dev,
                 cl->nodes, cl->devs_per_node);
        return why;
    }
    if (ep % cl->devs_per_node != 0 && cl->devs_per_node % ep != 0) {
        snprintf(why, len, "ep %d neither divides nor is a multiple of the %d devices per node", ep,
                 cl->devs_per_node);
        return why;
    }
    if (pp > c->n_layers) {
        snprintf(why, len, "pp %d: more stages than the model's %d layers", pp, c->n_layers);
        return why;
    }
    if (ep > E) {
        snprintf(why, len, "ep %d: more expert-parallel workers than the model's %d experts", ep,
                 E);
        return why;
    }
    q = (E + ep - 1) / ep;
    if ((long)q * (ep - 1) >= E) {
        snprintf(why, len,
                 "ep %d: the contiguous split of %d experts (%d per column) leaves columns %d..%d "
                 "without experts",
                 ep, E, q, (E + q - 1) / q, ep - 1);
        return why;
    }
    return NULL;
}

/*
 * Fill @p for grid @pp x @ep. Returns HD_OK with *@short_p = 0 when every worker fits, else
 * HD_OK with the largest shortfall in *@short_p and its description in @why; errors only on
 * allocation failure.
 */
static hd_status_t plan_grid(const hd_model_config_t *c, const hd_cluster_t *cl,
                             const plan_ctx_t *x, int pp, int ep, hd_plan_t *p, uint64_t *short_p,
                             char *why, size_t why_len)
{
    int n = c->n_layers, n_all = c->n_layers + c->n_mtp_layers, E = c->n_routed_experts;
    int q = (E + ep - 1) / ep, deepest = 0;
    double items[HD_MAX_LAYERS], total = 0.0;
    int lo[HD_MAX_LAYERS + 1];
    uint64_t worst = 0;
    hd_status_t st;

    p->pp = pp;
    p->ep = ep;
    p->n_workers = pp * ep;
    p->ep_cross_node = ep > cl->devs_per_node;
    p->stages = hd_calloc((size_t)pp, sizeof(*p->stages), "plan stages");
    p->workers = hd_calloc((size_t)pp * (size_t)ep, sizeof(*p->workers), "plan workers");
    if (p->stages == NULL || p->workers == NULL) {
        return HD_ERR_NO_MEMORY;
    }

    /* items: main blocks; embed folded into the first, head + MTP blocks into the last */
    for (int b = 0; b < n; b++) {
        items[b] = p->block_cost[b];
    }
    items[0] += p->embed_cost;
    items[n - 1] += p->head_cost;
    for (int b = n; b < n_all; b++) {
        items[n - 1] += p->block_cost[b];
    }
    p->cost_item_max = 0.0;
    for (int b = 0; b < n; b++) {
        total += items[b];
        p->cost_item_max = fmax(p->cost_item_max, items[b]);
    }
    st = plan_partition(items, n, pp, lo);
    if (st != HD_OK) {
        return st;
    }
    p->cost_max = 0.0;
    p->cost_mean = total / pp;
    for (int s = 0; s < pp; s++) {
        hd_plan_stage_t *sg = &p->stages[s];
        int hi_all;
        sg->layer_lo = lo[s];
        sg->layer_hi = lo[s + 1];
        sg->has_embed = s == 0;
        sg->has_head = s == pp - 1;
        sg->cost = 0.0;
        hi_all = sg->has_head ? n_all : sg->layer_hi;
        for (int b = sg->layer_lo; b < sg->layer_hi; b++) {
            int r = c->compress_ratio[b];
            sg->n_csa += r == 4;
            sg->n_swa += r == 0;
            sg->n_hca += r != 0 && r != 4;
        }
        for (int b = sg->layer_lo; b < sg->layer_hi; b++) {
            sg->cost += items[b];
        }
        p->cost_max = fmax(p->cost_max, sg->cost);
        deepest = hi_all - sg->layer_lo > deepest ? hi_all - sg->layer_lo : deepest;
    }

    for (int s = 0; s < pp; s++) {
        const hd_plan_stage_t *sg = &p->stages[s];
        int hi_all = sg->has_head ? n_all : sg->layer_hi;
        uint64_t dense = 0, per_col_expert = 0, globals = 0;
        hd_plan_buffers_t bf;
        for (int b = sg->layer_lo; b < hi_all; b++) {
            dense += x->bw[b].dense;
            per_col_expert += x->bw[b].expert;
        }
        if (sg->has_embed || (sg->has_head && c->n_mtp_layers > 0)) {
            globals += p->embed_bytes;
        }
        if (sg->has_head) {
            globals += p->head_bytes;
        }
        plan_buffers(c, cl, p, s, &bf);
        for (int col = 0; col < ep; col++) {
            hd_plan_worker_t *w = &p->workers[s * ep + col];
            int rank = s * ep + col;
            uint64_t need, kv_fixed;
            w->stage = s;
            w->column = col;
            w->node = rank / cl->devs_per_node;
            w->device = rank % cl->devs_per_node;
            w->expert_lo = col * q < E ? col * q : E;
            w->expert_hi = (col + 1) * q < E ? (col + 1) * q : E;
            w->weights_dense = dense;
            w->weights_experts = per_col_expert * (uint64_t)(w->expert_hi - w->expert_lo);
            w->weights_globals = globals;
            w->weights = dense + w->weights_experts + globals;
            w->buffers = bf;
            w->reserve = cl->reserve;
            w->kv_min_seq = plan_kv_bytes(c, sg->layer_lo, hi_all, p->min_context, cl->kv_format);
            kv_fixed = w->weights + bf.total + w->reserve;
            need = kv_fixed + w->kv_min_seq;
            w->kv_budget = cl->dev_mem > kv_fixed ? cl->dev_mem - kv_fixed : 0;
            w->max_seqs = w->kv_budget / (w->kv_min_seq > 0 ? w->kv_min_seq : 1);
            for (int i = 0; i < HD_PLAN_N_BATCH; i++) {
                w->max_context[i] = plan_max_context(c, sg->layer_lo, hi_all, cl->kv_format,
                                                     w->kv_budget, plan_batches[i], p->max_pos);
            }
            if (need > cl->dev_mem && need - cl->dev_mem > worst) {
                double u = need >= (16ull << 30) ? GIB : 1024.0 * 1024.0; /* GiB or MiB */
                const char *un = u == GIB ? "GiB" : "MiB";
                worst = need - cl->dev_mem;
                snprintf(why, why_len,
                         "%s stage %d column %d (node %d %s %d, layers %d..%d%s, experts %d..%d) "
                         "needs %.2f %s (weights %.2f, buffers %.2f, reserve %.2f, KV of one "
                         "%llu-token sequence %.3f) but has %.2f %s: short by %.2f %s "
                         "(%llu bytes)",
                         cl->kind == HD_CLUSTER_CPU ? "cpu worker" : "worker", s, col, w->node,
                         cl->kind == HD_CLUSTER_CPU ? "worker" : "gpu", w->device, sg->layer_lo,
                         sg->layer_hi - 1, hi_all > sg->layer_hi ? " + MTP" : "", w->expert_lo,
                         w->expert_hi - 1, need / u, un, w->weights / u, bf.total / u,
                         w->reserve / u, (unsigned long long)p->min_context, w->kv_min_seq / u,
                         cl->dev_mem / u, un, (need - cl->dev_mem) / u, un,
                         (unsigned long long)(need - cl->dev_mem));
            }
        }
    }
    p->max_seqs = UINT64_MAX;
    for (int r = 0; r < pp * ep; r++) {
        p->max_seqs = p->workers[r].max_seqs < p->max_seqs ? p->workers[r].max_seqs : p->max_seqs;
    }
    for (int i = 0; i < HD_PLAN_N_BATCH; i++) {
        p->batch[i] = plan_batches[i];
        p->max_context[i] = p->max_pos;
        for (int r = 0; r < pp * ep; r++) {
            if (p->workers[r].max_context[i] < p->max_context[i]) {
                p->max_context[i] = p->workers[r].max_context[i];
            }
        }
    }

    /* communication per decode step at ref_batch tokens per column */
    {
        hd_plan_comm_t *cm = &p->comm;
        double B = cl->ref_batch, frac_out = ep > 1 ? (double)(ep - 1) / ep : 0.0;
        memset(cm, 0, sizeof(*cm));
        cm->a2a_bytes = (uint64_t)(2.0 * B * c->n_experts_per_tok * c->dim * WIRE_BYTES * frac_out);
        cm->a2a_inter = ep > cl->devs_per_node ? (double)(ep - cl->devs_per_node) / (ep - 1) : 0.0;
        cm->a2a_us = 1e6 * ((double)cm->a2a_bytes * (1.0 - cm->a2a_inter) / cl->intra_bw +
                            (double)cm->a2a_bytes * cm->a2a_inter / cl->inter_bw);
        cm->pp_bytes = pp > 1 ? (uint64_t)cl->ref_batch * c->hc_mult * c->dim * ACT_BYTES : 0;
        cm->step_us = cm->a2a_us * deepest;
        for (int s = 0; s + 1 < pp; s++) {
            bool inter = p->workers[s * ep].node != p->workers[(s + 1) * ep].node;
            double us = 1e6 * (double)cm->pp_bytes / (inter ? cl->inter_bw : cl->intra_bw);
            cm->pp_inter += inter;
            cm->pp_us = fmax(cm->pp_us, us);
            cm->step_us += us;
        }
    }
    *short_p = worst;
    return HD_OK;
}

static void plan_free_grid(hd_plan_t *p)
{
    hd_free(p->stages);
    hd_free(p->workers);
    p->stages = NULL;
    p->workers = NULL;
}

/* ---- the planner ---- */

static hd_status_t plan_check_cluster(const hd_cluster_t *cl, char *err, size_t err_len)
{
    if (cl->kind != HD_CLUSTER_GPU && cl->kind != HD_CLUSTER_CPU) {
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM, "unknown cluster kind %d",
                         (int)cl->kind);
    }
    if (cl->nodes < 1 || cl->devs_per_node < 1) {
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM,
                         "the cluster needs at least 1 node and 1 %s per node (got %d x %d)",
                         cl->kind == HD_CLUSTER_CPU ? "worker" : "GPU", cl->nodes,
                         cl->devs_per_node);
    }
    if (cl->kind == HD_CLUSTER_CPU && cl->nodes != 1) {
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM,
                         "CPU workers run on this host: nodes must be 1 (got %d)", cl->nodes);
    }
    if ((long)cl->nodes * cl->devs_per_node > 65536) {
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM, "%ld devices: more than 65536",
                         (long)cl->nodes * cl->devs_per_node);
    }
    if (cl->dev_mem == 0) {
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM, "device memory is 0");
    }
    if (cl->pp < 0 || cl->ep < 0) {
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM, "negative pp %d or ep %d", cl->pp,
                         cl->ep);
    }
    if (!(cl->intra_bw > 0.0) || !(cl->inter_bw > 0.0) || !isfinite(cl->intra_bw) ||
        !isfinite(cl->inter_bw)) {
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM,
                         "bandwidths must be finite and > 0 (intra %g, inter %g B/s)", cl->intra_bw,
                         cl->inter_bw);
    }
    if (cl->ref_batch < 1 || cl->step_tokens < 1 || cl->ref_context < 1 ||
        !(cl->flops_per_byte > 0.0) || !isfinite(cl->flops_per_byte)) {
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM,
                         "ref_batch, step_tokens, ref_context and flops_per_byte must be > 0");
    }
    if (cl->step_tokens > (1u << 24) || cl->ref_batch > (1 << 20) || cl->reserve > (1ull << 62)) {
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM,
                         "step_tokens (at most 2^24), ref_batch (2^20) or reserve (2^62 bytes) "
                         "out of range");
    }
    if (cl->kv_format != HD_KV_FMT_PACKED && cl->kv_format != HD_KV_FMT_BF16) {
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM, "unknown KV format %d",
                         (int)cl->kv_format);
    }
    return HD_OK;
}

/* Common part of every candidate: costs, per-block bytes, resolved contexts. */
static hd_status_t plan_base(const hd_model_config_t *c, const hd_cluster_t *cl, plan_ctx_t *x,
                             hd_plan_t *p)
{
    int n_all = c->n_layers + c->n_mtp_layers;
    hd_status_t st;

    memset(p, 0, sizeof(*p));
    snprintf(p->model, sizeof(p->model), "%s", c->name);
    p->cluster = *cl;
    p->n_layers = c->n_layers;
    p->n_mtp = c->n_mtp_layers;
    p->max_pos = (uint64_t)c->max_pos;
    p->min_context = cl->min_context < p->max_pos ? cl->min_context : p->max_pos;
    p->ref_context = cl->ref_context < p->max_pos ? cl->ref_context : p->max_pos;
    st = plan_global_weights(c, &p->embed_bytes, &p->head_bytes, &x->head_macs);
    if (st != HD_OK) {
        return st;
    }
    /* embed: one bf16 row per token; head: its weights shared by ref_batch tokens */
    p->embed_cost = 2.0 * c->dim;
    p->head_cost = (double)p->head_bytes / cl->ref_batch + 2.0 * x->head_macs / cl->flops_per_byte;
    for (int b = 0; b < n_all; b++) {
        st = plan_block_weights(c, b, &x->bw[b]);
        if (st != HD_OK) {
            return st;
        }
        p->ratio[b] = c->compress_ratio[b];
        p->block_dense[b] = x->bw[b].dense;
        p->block_expert[b] = x->bw[b].expert;
        p->block_cost[b] = plan_block_cost(c, cl, b, &x->bw[b], p->ref_context);
        if (b >= c->n_layers) {
            p->block_cost[b] += p->head_cost; /* the MTP head pass */
        }
    }
    return HD_OK;
}

hd_status_t hd_plan_make(const hd_model_config_t *cfg, const hd_cluster_t *cl, hd_plan_t *plan,
                         char *err, size_t err_len)
{
    int cand_pp[64], cand_ep[64], n_cand = 0;
    int n_dev, g;
    plan_ctx_t *x = NULL;
    hd_plan_t p, best_fail;
    uint64_t best_short = UINT64_MAX;
    char why[512], best_why[512] = "", tried[256] = "", first[160] = "";
    hd_status_t st;

    if (err != NULL && err_len > 0) {
        err[0] = '\0';
    }
    if (cfg == NULL || cl == NULL || plan == NULL) {
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM, "NULL argument");
    }
    st = hd_config_validate(cfg, why, sizeof(why));
    if (st != HD_OK) {
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM, "bad model config: %s", why);
    }
    st = plan_check_cluster(cl, err, err_len);
    if (st != HD_OK) {
        return st;
    }
    n_dev = cl->nodes * cl->devs_per_node;
    g = cl->devs_per_node;

    /* the candidate grids, in order of preference */
    if (cl->pp > 0 || cl->ep > 0) {
        int pp = cl->pp, ep = cl->ep;
        if (pp == 0) {
            pp = n_dev % ep == 0 ? n_dev / ep : 0;
        } else if (ep == 0) {
            ep = n_dev % pp == 0 ? n_dev / pp : 0;
        }
        if (pp == 0 || ep == 0) {
            return plan_fail(err, err_len, HD_ERR_INVALID_PARAM,
                             "%s %d does not divide the %d devices (%d nodes x %d)",
                             cl->pp > 0 ? "pp" : "ep", cl->pp > 0 ? cl->pp : cl->ep, n_dev,
                             cl->nodes, g);
        }
        if (plan_grid_invalid(cfg, cl, pp, ep, why, sizeof(why)) != NULL) {
            return plan_fail(err, err_len, HD_ERR_INVALID_PARAM, "%s", why);
        }
        cand_pp[0] = pp;
        cand_ep[0] = ep;
        n_cand = 1;
    } else {
        cand_pp[n_cand] = cl->nodes; /* one stage per node */
        cand_ep[n_cand++] = g;
        for (int ep = g - 1; ep >= 1 && n_cand < 32; ep--) { /* more stages per node */
            if (g % ep == 0) {
                cand_pp[n_cand] = n_dev / ep;
                cand_ep[n_cand++] = ep;
            }
        }
        for (int m = 2; m <= cl->nodes && n_cand < 64; m++) { /* rows spanning m nodes */
            if (cl->nodes % m == 0) {
                cand_pp[n_cand] = cl->nodes / m;
                cand_ep[n_cand++] = g * m;
            }
        }
    }

    x = hd_calloc(1, sizeof(*x), "plan context");
    if (x == NULL) {
        return plan_fail(err, err_len, HD_ERR_NO_MEMORY, "out of memory");
    }
    memset(&best_fail, 0, sizeof(best_fail));
    for (int i = 0; i < n_cand; i++) {
        uint64_t shortfall = 0;
        size_t tl = strlen(tried);
        if (plan_grid_invalid(cfg, cl, cand_pp[i], cand_ep[i], why, sizeof(why)) != NULL) {
            if (i == 0) { /* only auto candidates can be invalid here */
                snprintf(first, sizeof(first), "%dx%d is not valid (%.100s)", cand_pp[i],
                         cand_ep[i], why);
            }
            continue;
        }
        st = plan_base(cfg, cl, x, &p);
        if (st == HD_OK) {
            st = plan_grid(cfg, cl, x, cand_pp[i], cand_ep[i], &p, &shortfall, why, sizeof(why));
        }
        if (st != HD_OK) {
            plan_free_grid(&p);
            hd_free(x);
            return plan_fail(err, err_len, HD_ERR_NO_MEMORY, "out of memory");
        }
        if (shortfall == 0) {
            p.grid_auto = cl->pp == 0 && cl->ep == 0;
            if (!p.grid_auto) {
                snprintf(p.grid_why, sizeof(p.grid_why), "given (%s%s%s)", cl->pp > 0 ? "pp" : "",
                         cl->pp > 0 && cl->ep > 0 ? " and " : "", cl->ep > 0 ? "ep" : "");
            } else if (i == 0) {
                snprintf(p.grid_why, sizeof(p.grid_why), "auto: %s, experts over its %d %s",
                         cl->kind == HD_CLUSTER_CPU ? "one stage" : "one stage per node", g,
                         cl->kind == HD_CLUSTER_CPU ? "workers" : "GPUs");
            } else {
                if (p.ep < g) {
                    snprintf(p.grid_why, sizeof(p.grid_why), "auto: %s; %d stages per node", first,
                             g / p.ep);
                } else {
                    snprintf(p.grid_why, sizeof(p.grid_why),
                             "auto: %s; rows span %d nodes (all-to-all over the network)", first,
                             p.ep / g);
                }
            }
            hd_free(x);
            plan_free_grid(&best_fail);
            *plan = p;
            return HD_OK;
        }
        snprintf(tried + tl, sizeof(tried) - tl, "%s%dx%d does not fit", tl ? ", " : "", cand_pp[i],
                 cand_ep[i]);
        if (i == 0) {
            snprintf(first, sizeof(first), "%dx%d does not fit", cand_pp[i], cand_ep[i]);
        }
        if (shortfall < best_short) {
            plan_free_grid(&best_fail);
            best_fail = p;
            best_short = shortfall;
            snprintf(best_why, sizeof(best_why), "%s", why);
        } else {
            plan_free_grid(&p);
        }
    }
    hd_free(x);
    if (best_short == UINT64_MAX) {
        /* every auto candidate was invalid: report why the natural grid is */
        plan_grid_invalid(cfg, cl, cand_pp[0], cand_ep[0], why, sizeof(why));
        return plan_fail(err, err_len, HD_ERR_INVALID_PARAM, "no valid PP x EP grid: %s", why);
    }
    plan_free_grid(&best_fail);
    if (n_cand > 1) {
        return plan_fail(err, err_len, HD_ERR_NO_MEMORY,
                         "%s on %d x %d %s: no grid fits (tried %s); closest: PP x EP = %dx%d, %s",
                         cfg->name, cl->nodes, g,
                         cl->kind == HD_CLUSTER_CPU ? "CPU workers" : "GPUs", tried, best_fail.pp,
                         best_fail.ep, best_why);
    }
    return plan_fail(err, err_len, HD_ERR_NO_MEMORY, "%s does not fit PP x EP = %dx%d: %s",
                     cfg->name, best_fail.pp, best_fail.ep, best_why);
}

void hd_plan_cleanup(hd_plan_t *plan)
{
    if (plan != NULL) {
        plan_free_grid(plan);
    }
}

/* ---- JSON ---- */

static void json_u64(hd_buf_t *b, const char *key, uint64_t v, bool comma)
{
    hd_buf_printf(b, "\"%s\":%llu%s", key, (unsigned long long)v, comma ? "," : "");
}

static void json_num(hd_buf_t *b, const char *key, double v, bool comma)
{
    hd_buf_printf(b, "\"%s\":%.6g%s", key, isfinite(v) ? v : 0.0, comma ? "," : "");
}

static void json_contexts(hd_buf_t *b, const uint64_t *ctx)
{
    hd_buf_puts(b, "\"max_context\":[");
    for (int i = 0; i < HD_PLAN_N_BATCH; i++) {
        hd_buf_printf(b, "%s{\"batch\":%d,\"context\":%llu}", i ? "," : "", plan_batches[i],
                      (unsigned long long)ctx[i]);
    }
    hd_buf_puts(b, "]");
}

void hd_plan_write_json(const hd_plan_t *p, hd_buf_t *b)
{
    const hd_cluster_t *cl = &p->cluster;
    int n_all = p->n_layers + p->n_mtp;

    hd_buf_puts(b, "{\"fits\":true,\"model\":");
    hd_buf_json_str(b, p->model, strlen(p->model));
    hd_buf_printf(b, ",\"cluster\":{\"kind\":\"%s\",", cl->kind == HD_CLUSTER_CPU ? "cpu" : "gpu");
    hd_buf_printf(b, "\"nodes\":%d,\"devs_per_node\":%d,", cl->nodes, cl->devs_per_node);
    json_u64(b, "dev_mem", cl->dev_mem, true);
    json_num(b, "intra_bw", cl->intra_bw, true);
    json_num(b, "inter_bw", cl->inter_bw, true);
    hd_buf_printf(b, "\"kv_format\":\"%s\",", cl->kv_format == HD_KV_FMT_BF16 ? "bf16" : "packed");
    json_u64(b, "reserve", cl->reserve, true);
    json_u64(b, "step_tokens", cl->step_tokens, true);
    json_u64(b, "min_context", p->min_context, true);
    json_u64(b, "ref_context", p->ref_context, true);
    hd_buf_printf(b, "\"ref_batch\":%d,", cl->ref_batch);
    json_num(b, "flops_per_byte", cl->flops_per_byte, false);
    hd_buf_printf(b,
                  "},\"grid\":{\"pp\":%d,\"ep\":%d,\"n_workers\":%d,\"auto\":%s,"
                  "\"ep_cross_node\":%s,\"why\":",
                  p->pp, p->ep, p->n_workers, p->grid_auto ? "true" : "false",
                  p->ep_cross_node ? "true" : "false");
    hd_buf_json_str(b, p->grid_why, strlen(p->grid_why));
    hd_buf_puts(b, "},\"cost\":{");
    json_num(b, "embed", p->embed_cost, true);
    json_num(b, "head", p->head_cost, true);
    json_num(b, "stage_max", p->cost_max, true);
    json_num(b, "stage_mean", p->cost_mean, true);
    json_num(b, "item_max", p->cost_item_max, true);
    hd_buf_puts(b, "\"blocks\":[");
    for (int i = 0; i < n_all; i++) {
        hd_buf_printf(b, "%s{\"block\":%d,\"mtp\":%s,\"type\":\"%s\",\"ratio\":%d,", i ? "," : "",
                      i, i >= p->n_layers ? "true" : "false", hd_plan_layer_type(p->ratio[i]),
                      p->ratio[i]);
        json_num(b, "cost", p->block_cost[i], true);
        json_u64(b, "dense_bytes", p->block_dense[i], true);
        json_u64(b, "expert_bytes", p->block_expert[i], false);
        hd_buf_puts(b, "}");
    }
    hd_buf_puts(b, "]},");
    json_u64(b, "embed_bytes", p->embed_bytes, true);
    json_u64(b, "head_bytes", p->head_bytes, true);
    hd_buf_puts(b, "\"stages\":[");
    for (int s = 0; s < p->pp; s++) {
        const hd_plan_stage_t *sg = &p->stages[s];
        hd_buf_printf(b,
                      "%s{\"stage\":%d,\"layer_lo\":%d,\"layer_hi\":%d,\"embed\":%s,\"head\":%s,"
                      "\"mtp\":%d,\"n_csa\":%d,\"n_hca\":%d,\"n_swa\":%d,",
                      s ? "," : "", s, sg->layer_lo, sg->layer_hi, sg->has_embed ? "true" : "false",
                      sg->has_head ? "true" : "false", sg->has_head ? p->n_mtp : 0, sg->n_csa,
                      sg->n_hca, sg->n_swa);
        json_num(b, "cost", sg->cost, true);
        hd_buf_puts(b, "\"workers\":[");
        for (int col = 0; col < p->ep; col++) {
            const hd_plan_worker_t *w = hd_plan_worker(p, s, col);
            const hd_plan_buffers_t *bf = &w->buffers;
            hd_buf_printf(b,
                          "%s{\"column\":%d,\"node\":%d,\"device\":%d,\"expert_lo\":%d,"
                          "\"expert_hi\":%d,\"weights\":{",
                          col ? "," : "", col, w->node, w->device, w->expert_lo, w->expert_hi);
            json_u64(b, "dense", w->weights_dense, true);
            json_u64(b, "experts", w->weights_experts, true);
            json_u64(b, "globals", w->weights_globals, true);
            json_u64(b, "total", w->weights, false);
            hd_buf_puts(b, "},\"buffers\":{");
            json_u64(b, "residual", bf->residual, true);
            json_u64(b, "attention", bf->attention, true);
            json_u64(b, "indexer", bf->indexer, true);
            json_u64(b, "moe", bf->moe, true);
            json_u64(b, "pipeline", bf->pipeline, true);
            json_u64(b, "logits", bf->logits, true);
            json_u64(b, "total", bf->total, false);
            hd_buf_puts(b, "},");
            json_u64(b, "reserve", w->reserve, true);
            json_u64(b, "kv_budget", w->kv_budget, true);
            json_u64(b, "kv_min_seq", w->kv_min_seq, true);
            json_u64(b, "max_seqs", w->max_seqs, true);
            json_contexts(b, w->max_context);
            hd_buf_puts(b, "}");
        }
        hd_buf_puts(b, "]}");
    }
    hd_buf_puts(b, "],");
    json_u64(b, "max_seqs", p->max_seqs, true);
    json_contexts(b, p->max_context);
    hd_buf_puts(b, ",\"comm\":{");
    json_u64(b, "a2a_bytes", p->comm.a2a_bytes, true);
    json_num(b, "a2a_inter", p->comm.a2a_inter, true);
    json_num(b, "a2a_us", p->comm.a2a_us, true);
    json_u64(b, "pp_bytes", p->comm.pp_bytes, true);
    hd_buf_printf(b, "\"pp_inter\":%d,", p->comm.pp_inter);
    json_num(b, "pp_us", p->comm.pp_us, true);
    json_num(b, "step_us", p->comm.step_us, false);
    hd_buf_puts(b, "}}");
}
