/*
 * test_plan.c - the placement planner (model/plan.c): size/rate parsing, the invariants of
 * every plan (each layer and each expert owned once, embed first, head and MTP last, weights
 * equal to the inventory bytes of the worker's tensors, KV budget arithmetic, the balance
 * bound), the Pro/Flash/tiny placements, grid choice, refusals and the JSON form.
 */
#include "hadal/config.h"
#include "hadal/engine.h"
#include "hadal/inventory.h"
#include "hadal/json.h"
#include "hadal/kv_size.h"
#include "hadal/plan.h"
#include "hd_test.h"
#include "model_testutil.h"

#include <stdlib.h>
#include <string.h>

#define GIB_U (1ull << 30)

/* ---- helpers ---- */

static void gpu_cluster(hd_cluster_t *cl, int nodes, int gpus, uint64_t mem)
{
    hd_cluster_init(cl, HD_CLUSTER_GPU);
    cl->nodes = nodes;
    cl->devs_per_node = gpus;
    cl->dev_mem = mem;
}

static void cpu_cluster(hd_cluster_t *cl, int workers, uint64_t mem)
{
    hd_cluster_init(cl, HD_CLUSTER_CPU);
    cl->devs_per_node = workers;
    cl->dev_mem = mem;
}

static uint64_t kv_range(const hd_model_config_t *c, int lo, int hi, uint64_t len,
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

/* Inventory bytes of exactly what worker @w loads: its blocks, its experts, AUTO globals. */
static uint64_t inv_worker_bytes(const hd_model_config_t *c, const hd_plan_t *p,
                                 const hd_plan_worker_t *w)
{
    const hd_plan_stage_t *sg = &p->stages[w->stage];
    bool *mask = calloc((size_t)c->n_routed_experts, sizeof(*mask));
    hd_inv_filter_t f = {.layer_lo = sg->layer_lo,
                         .layer_hi = sg->has_head ? c->n_layers + c->n_mtp_layers : sg->layer_hi,
                         .globals = HD_INV_GLOBALS_AUTO};
    hd_inv_t inv;
    uint64_t total = 0;
    for (int x = w->expert_lo; x < w->expert_hi; x++) {
        mask[x] = true;
    }
    f.experts = mask;
    if (hd_inv_init(&inv, c, &f) == HD_OK) {
        total = hd_inv_total_bytes(&inv);
        hd_inv_cleanup(&inv);
    }
    free(mask);
    return total;
}

/* Every invariant a successful plan must hold. */
static void check_plan(const hd_model_config_t *c, const hd_cluster_t *cl, const hd_plan_t *p,
                       bool check_inventory)
{
    int n_all = c->n_layers + c->n_mtp_layers, E = c->n_routed_experts;
    int q = (E + p->ep - 1) / p->ep;
    double sum = 0.0;
    int next = 0;

    HD_CHECK_INT_EQ(p->pp * p->ep, cl->nodes * cl->devs_per_node);
    HD_CHECK_INT_EQ(p->n_workers, p->pp * p->ep);
    HD_CHECK_TRUE(p->pp <= c->n_layers && p->ep <= E);
    HD_CHECK_INT_EQ(p->n_layers, c->n_layers);
    HD_CHECK_INT_EQ(p->n_mtp, c->n_mtp_layers);
    /* layers: contiguous, non-empty, each exactly once; embed first, head + MTP last */
    for (int s = 0; s < p->pp; s++) {
        const hd_plan_stage_t *sg = &p->stages[s];
        int csa = 0, hca = 0, swa = 0;
        HD_CHECK_INT_EQ(sg->layer_lo, next);
        HD_CHECK_TRUE(sg->layer_hi > sg->layer_lo);
        next = sg->layer_hi;
        HD_CHECK_TRUE(sg->has_embed == (s == 0));
        HD_CHECK_TRUE(sg->has_head == (s == p->pp - 1));
        for (int b = sg->layer_lo; b < sg->layer_hi; b++) {
            int r = c->compress_ratio[b];
            csa += r == 4;
            swa += r == 0;
            hca += r != 0 && r != 4;
        }
        HD_CHECK_INT_EQ(sg->n_csa, csa);
        HD_CHECK_INT_EQ(sg->n_hca, hca);
        HD_CHECK_INT_EQ(sg->n_swa, swa);
        sum += sg->cost;
        HD_CHECK_TRUE(sg->cost <= p->cost_max * (1 + 1e-12));
    }
    HD_CHECK_INT_EQ(next, c->n_layers);
    /* balance: the optimum is within one item of the mean (greedy bound) */
    HD_CHECK_NEAR(sum / p->pp, p->cost_mean, 1e-9 * sum);
    HD_CHECK_MSG(p->cost_max <= p->cost_mean + p->cost_item_max + 1e-9 * sum,
                 "max %g mean %g item %g", p->cost_max, p->cost_mean, p->cost_item_max);
    HD_CHECK_TRUE(p->cost_max >= p->cost_mean * (1 - 1e-12));
    {
        double total = p->embed_cost + p->head_cost;
        for (int b = 0; b < n_all; b++) {
            HD_CHECK_TRUE(p->block_cost[b] > 0.0);
            total += p->block_cost[b];
        }
        HD_CHECK_NEAR(total, sum, 1e-9 * sum);
    }
    /* experts: each row owns every expert exactly once, in the engine's contiguous split */
    for (int s = 0; s < p->pp; s++) {
        int own[1024] = {0};
        for (int col = 0; col < p->ep; col++) {
            const hd_plan_worker_t *w = hd_plan_worker(p, s, col);
            HD_CHECK_INT_EQ(w->stage, s);
            HD_CHECK_INT_EQ(w->column, col);
            HD_CHECK_TRUE(w->expert_hi > w->expert_lo);
            for (int x = w->expert_lo; x < w->expert_hi; x++) {
                own[x]++;
                HD_CHECK_INT_EQ(x / q, col); /* owner(x) = x / ceil(E / ep) */
            }
            HD_CHECK_INT_EQ(w->node * cl->devs_per_node + w->device, s * p->ep + col);
        }
        for (int x = 0; x < E; x++) {
            HD_CHECK_MSG(own[x] == 1, "stage %d expert %d owned %d times", s, x, own[x]);
        }
    }
    /* memory */
    for (int r = 0; r < p->n_workers; r++) {
        const hd_plan_worker_t *w = &p->workers[r];
        const hd_plan_stage_t *sg = &p->stages[w->stage];
        int hi = sg->has_head ? n_all : sg->layer_hi;
        const hd_plan_buffers_t *bf = &w->buffers;
        uint64_t fixed = w->weights + bf->total + w->reserve;
        HD_CHECK_INT_EQ(w->weights, w->weights_dense + w->weights_experts + w->weights_globals);
        HD_CHECK_INT_EQ(bf->total, bf->residual + bf->attention + bf->indexer + bf->moe +
                                       bf->pipeline + bf->logits);
        HD_CHECK_TRUE((bf->indexer > 0) == (sg->n_csa > 0));
        HD_CHECK_TRUE((bf->logits > 0) == sg->has_head);
        HD_CHECK_TRUE((bf->pipeline > 0) == (p->pp > 1));
        HD_CHECK_INT_EQ(w->reserve, cl->reserve);
        HD_CHECK_TRUE(fixed + w->kv_min_seq <= cl->dev_mem);
        HD_CHECK_INT_EQ(w->kv_budget, cl->dev_mem - fixed);
        HD_CHECK_INT_EQ(w->kv_min_seq,
                        kv_range(c, sg->layer_lo, hi, p->min_context, cl->kv_format));
        if (check_inventory) {
            HD_CHECK_INT_EQ(w->weights, inv_worker_bytes(c, p, w));
        }
        for (int i = 0; i < HD_PLAN_N_BATCH; i++) {
            uint64_t L = w->max_context[i], bt = (uint64_t)p->batch[i];
            HD_CHECK_TRUE(L <= p->max_pos);
            HD_CHECK_TRUE(L == 0 ||
                          bt * kv_range(c, sg->layer_lo, hi, L, cl->kv_format) <= w->kv_budget);
            HD_CHECK_TRUE(L == p->max_pos ||
                          bt * kv_range(c, sg->layer_lo, hi, L + 1, cl->kv_format) > w->kv_budget);
            HD_CHECK_TRUE(p->max_context[i] <= L);
            if (i > 0) {
                HD_CHECK_TRUE(w->max_context[i] <= w->max_context[i - 1]);
            }
        }
        HD_CHECK_TRUE(w->max_context[0] >= p->min_context);
        HD_CHECK_TRUE(w->max_seqs >= 1);
        HD_CHECK_TRUE(w->max_seqs * w->kv_min_seq <= w->kv_budget);
        HD_CHECK_TRUE((w->max_seqs + 1) * w->kv_min_seq > w->kv_budget);
        HD_CHECK_TRUE(p->max_seqs <= w->max_seqs);
    }
    HD_CHECK_INT_EQ(p->batch[0], 1);
    HD_CHECK_INT_EQ(p->batch[1], 8);
    HD_CHECK_INT_EQ(p->batch[2], 64);
}

/* ---- parsing ---- */

HD_TEST(parse_bytes)
{
    uint64_t v = 0;
    HD_CHECK_TRUE(hd_plan_parse_bytes("80GiB", &v) == HD_OK && v == 80 * GIB_U);
    HD_CHECK_TRUE(hd_plan_parse_bytes("141GB", &v) == HD_OK && v == 141000000000ull);
    HD_CHECK_TRUE(hd_plan_parse_bytes("512mib", &v) == HD_OK && v == 512ull << 20);
    HD_CHECK_TRUE(hd_plan_parse_bytes("1.5TiB", &v) == HD_OK && v == 3ull << 39);
    HD_CHECK_TRUE(hd_plan_parse_bytes("0.5KiB", &v) == HD_OK && v == 512);
    HD_CHECK_TRUE(hd_plan_parse_bytes("4096B", &v) == HD_OK && v == 4096);
    HD_CHECK_TRUE(hd_plan_parse_bytes("4096", &v) == HD_OK && v == 4096);
    HD_CHECK_TRUE(hd_plan_parse_bytes("18446744073709551615", &v) == HD_OK &&
                  v == 18446744073709551615ull);
    const char *bad[] = {"",
                         "GiB",
                         "-1GiB",
                         "80XB",
                         "80GiB junk",
                         "80 GiB",
                         "1.5B",
                         "1.0001KB",
                         "18446744073709551616",
                         "16777216TiB",
                         "1e3",
                         ".",
                         "1..5GB",
                         "0x10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 7;
        HD_CHECK_MSG(hd_plan_parse_bytes(bad[i], &v) == HD_ERR_INVALID_PARAM && v == 7,
                     "'%s' accepted", bad[i]);
    }
    HD_CHECK_TRUE(hd_plan_parse_bytes(NULL, &v) == HD_ERR_INVALID_PARAM);
}

HD_TEST(parse_rate)
{
    double r = 0;
    HD_CHECK_TRUE(hd_plan_parse_rate("450GB/s", &r) == HD_OK && r == 450e9);
    HD_CHECK_TRUE(hd_plan_parse_rate("400Gbit/s", &r) == HD_OK && r == 50e9);
    HD_CHECK_TRUE(hd_plan_parse_rate("100Mbit", &r) == HD_OK && r == 12.5e6);
    HD_CHECK_TRUE(hd_plan_parse_rate("50GiB/s", &r) == HD_OK && r == 50.0 * GIB_U);
    HD_CHECK_TRUE(hd_plan_parse_rate("1.5GB/s", &r) == HD_OK && r == 1.5e9);
    const char *bad[] = {"", "0GB/s", "-1GB/s", "fast", "10GB/h", "inf", "nanGB/s", "10 GB/s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        HD_CHECK_MSG(hd_plan_parse_rate(bad[i], &r) == HD_ERR_INVALID_PARAM, "'%s' accepted",
                     bad[i]);
    }
}

/* ---- placements ---- */

HD_TEST(pro_4x8x80)
{
    hd_model_config_t c;
    hd_cluster_t cl;
    hd_plan_t p;
    char err[1024];
    hd_config_preset("pro", &c);
    gpu_cluster(&cl, 4, 8, 80 * GIB_U);
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages == NULL) {
        HD_CHECK_MSG(0, "%s", err);
        return;
    }
    check_plan(&c, &cl, &p, true);
    /* the natural grid: one stage per node, all-to-all on NVLink */
    HD_CHECK_INT_EQ(p.pp, 4);
    HD_CHECK_INT_EQ(p.ep, 8);
    HD_CHECK_TRUE(p.grid_auto && !p.ep_cross_node);
    HD_CHECK_INT_EQ(p.comm.pp_inter, 3);
    HD_CHECK_NEAR(p.comm.a2a_inter, 0.0, 0);
    for (int s = 0; s < 4; s++) {
        for (int col = 0; col < 8; col++) {
            const hd_plan_worker_t *w = hd_plan_worker(&p, s, col);
            HD_CHECK_INT_EQ(w->node, s);
            HD_CHECK_INT_EQ(w->device, col);
            HD_CHECK_INT_EQ(w->expert_lo, 48 * col);
            HD_CHECK_INT_EQ(w->expert_hi, 48 * col + 48);
            HD_CHECK_TRUE(w->weights < 40 * GIB_U); /* ~805 GB / 32 plus replicas */
        }
    }
    /* sensible: near-even stages, the last one lighter by the head and MTP */
    HD_CHECK_MSG(p.cost_max <= 1.05 * p.cost_mean, "imbalance %.3f", p.cost_max / p.cost_mean);
    HD_CHECK_TRUE(p.stages[3].layer_hi - p.stages[3].layer_lo <
                  p.stages[1].layer_hi - p.stages[1].layer_lo);
    /* 1M tokens for one sequence per column; long contexts even at 8 */
    HD_CHECK_INT_EQ(p.max_context[0], 1048576);
    HD_CHECK_TRUE(p.max_context[1] >= 524288);
    HD_CHECK_TRUE(p.max_context[2] >= 65536);
    /* the block bytes the plan reports are the inventory's */
    HD_CHECK_INT_EQ(p.block_expert[10],
                    2 * (3072ull * 3584 + 3072ull * 224) + 7168ull * 1536 + 7168ull * 96);
    HD_CHECK_INT_EQ(p.embed_bytes, 129280ull * 7168 * 2);
    /* pure: the same inputs give the same plan */
    {
        hd_plan_t p2;
        HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p2, err, sizeof(err)), HD_OK);
        HD_CHECK_TRUE(memcmp(p.workers, p2.workers, sizeof(*p.workers) * 32) == 0);
        HD_CHECK_TRUE(memcmp(p.stages, p2.stages, sizeof(*p.stages) * 4) == 0);
        hd_plan_cleanup(&p2);
    }
    hd_plan_cleanup(&p);
}

HD_TEST(pro_one_gpu_refused)
{
    hd_model_config_t c;
    hd_cluster_t cl;
    hd_plan_t p;
    hd_inv_t inv;
    char err[1024];
    const char *s;
    unsigned long long shortb;
    hd_config_preset("pro", &c);
    gpu_cluster(&cl, 1, 1, 80 * GIB_U);
    memset(&p, 0xab, sizeof(p));
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_ERR_NO_MEMORY);
    {
        hd_plan_t untouched;
        memset(&untouched, 0xab, sizeof(untouched));
        HD_CHECK_TRUE(memcmp(&p, &untouched, sizeof(p)) == 0); /* written only on success */
    }
    HD_CHECK_MSG(strstr(err, "worker stage 0 column 0 (node 0 gpu 0") != NULL, "%s", err);
    HD_CHECK_MSG(strstr(err, "short by") != NULL, "%s", err);
    s = strstr(err, "GiB (");
    HD_CHECK_TRUE(s != NULL);
    s = strrchr(err, '(');
    HD_CHECK_TRUE(s != NULL && sscanf(s, "(%llu bytes)", &shortb) == 1);
    /* short by at least the whole checkpoint minus the GPU */
    HD_CHECK_INT_EQ(hd_inv_init(&inv, &c, NULL), HD_OK);
    HD_CHECK_TRUE(shortb >= hd_inv_total_bytes(&inv) - 80 * GIB_U);
    HD_CHECK_TRUE(shortb < hd_inv_total_bytes(&inv));
    hd_inv_cleanup(&inv);
}

HD_TEST(flash_plans)
{
    hd_model_config_t c;
    hd_cluster_t cl;
    hd_plan_t p;
    char err[1024];
    hd_config_preset("flash", &c);

    gpu_cluster(&cl, 1, 8, 80 * GIB_U); /* one node: PP 1 x EP 8 */
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages != NULL) {
        check_plan(&c, &cl, &p, true);
        HD_CHECK_INT_EQ(p.pp, 1);
        HD_CHECK_INT_EQ(p.ep, 8);
        HD_CHECK_TRUE(p.stages[0].has_embed && p.stages[0].has_head);
        HD_CHECK_INT_EQ(p.stages[0].n_csa, 21);
        HD_CHECK_INT_EQ(p.stages[0].n_hca, 20);
        HD_CHECK_INT_EQ(p.stages[0].n_swa, 2);
        HD_CHECK_INT_EQ(p.workers[0].expert_hi, 32);
        HD_CHECK_INT_EQ(p.comm.pp_bytes, 0);
        hd_plan_cleanup(&p);
    }

    gpu_cluster(&cl, 2, 8, 80 * GIB_U); /* two nodes: PP 2 x EP 8 */
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages != NULL) {
        check_plan(&c, &cl, &p, true);
        HD_CHECK_INT_EQ(p.pp, 2);
        HD_CHECK_INT_EQ(p.comm.pp_inter, 1);
        hd_plan_cleanup(&p);
    }

    gpu_cluster(&cl, 1, 2, 141 * GIB_U); /* 2 x H200 */
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages != NULL) {
        check_plan(&c, &cl, &p, true);
        hd_plan_cleanup(&p);
    }

    gpu_cluster(&cl, 1, 1, 141 * GIB_U); /* 160 GB of weights on one H200: refused */
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_ERR_NO_MEMORY);
    HD_CHECK_MSG(strstr(err, "short by") != NULL, "%s", err);

    /* 64 nodes: 64 stages > 43 layers, so the rows span nodes */
    gpu_cluster(&cl, 64, 8, 80 * GIB_U);
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages != NULL) {
        check_plan(&c, &cl, &p, false);
        HD_CHECK_INT_EQ(p.pp, 32);
        HD_CHECK_INT_EQ(p.ep, 16);
        HD_CHECK_TRUE(p.ep_cross_node && p.grid_auto);
        HD_CHECK_TRUE(p.comm.a2a_inter > 0.5);
        HD_CHECK_MSG(strstr(p.grid_why, "span") != NULL, "%s", p.grid_why);
        hd_plan_cleanup(&p);
    }

    /* EP across nodes when asked: PP 1 x EP 16 */
    gpu_cluster(&cl, 2, 8, 80 * GIB_U);
    cl.pp = 1;
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages != NULL) {
        check_plan(&c, &cl, &p, true);
        HD_CHECK_INT_EQ(p.ep, 16);
        HD_CHECK_TRUE(p.ep_cross_node && !p.grid_auto);
        HD_CHECK_NEAR(p.comm.a2a_inter, 8.0 / 15.0, 1e-12);
        hd_plan_cleanup(&p);
    }
}

HD_TEST(tiny_a_cpu_2x2)
{
    hd_model_config_t c;
    hd_cluster_t cl;
    hd_plan_t p;
    char err[1024];
    hd_config_preset("tiny-a", &c);
    cpu_cluster(&cl, 4, 1 * GIB_U);
    cl.pp = 2;
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages == NULL) {
        HD_CHECK_MSG(0, "%s", err);
        return;
    }
    check_plan(&c, &cl, &p, true);
    HD_CHECK_INT_EQ(p.pp, 2);
    HD_CHECK_INT_EQ(p.ep, 2);
    HD_CHECK_TRUE(!p.grid_auto);
    HD_CHECK_INT_EQ(p.min_context, 4096); /* clipped to max_pos */
    HD_CHECK_INT_EQ(p.max_context[2], 4096);
    HD_CHECK_INT_EQ(hd_plan_worker(&p, 1, 1)->expert_lo, 4);
    HD_CHECK_INT_EQ(hd_plan_worker(&p, 1, 1)->expert_hi, 8);
    HD_CHECK_INT_EQ(hd_plan_worker(&p, 1, 1)->node, 0);
    HD_CHECK_INT_EQ(hd_plan_worker(&p, 1, 1)->device, 3);
    hd_plan_cleanup(&p);

    /* 3 workers: 8 experts split 3 + 3 + 2, the engine's owner(x) = x / ceil(8 / 3) */
    cpu_cluster(&cl, 3, 1 * GIB_U);
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages != NULL) {
        check_plan(&c, &cl, &p, true);
        HD_CHECK_INT_EQ(p.ep, 3);
        HD_CHECK_INT_EQ(hd_plan_worker(&p, 0, 1)->expert_lo, 3);
        HD_CHECK_INT_EQ(hd_plan_worker(&p, 0, 2)->expert_lo, 6);
        HD_CHECK_INT_EQ(hd_plan_worker(&p, 0, 2)->expert_hi, 8);
        HD_CHECK_TRUE(hd_plan_worker(&p, 0, 2)->weights < hd_plan_worker(&p, 0, 0)->weights);
        hd_plan_cleanup(&p);
    }

    /* the default grid on 4 CPU workers: one stage, experts over all four */
    cpu_cluster(&cl, 4, 1 * GIB_U);
    cl.pp = 0;
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages != NULL) {
        check_plan(&c, &cl, &p, true);
        HD_CHECK_INT_EQ(p.pp, 1);
        HD_CHECK_INT_EQ(p.ep, 4);
        hd_plan_cleanup(&p);
    }
}

/* Every worker of a plan loads in the engine: its layers, its experts, MTP on the last stage. */
HD_TEST(engine_loads_plan)
{
    hd_model_config_t c;
    hd_cluster_t cl;
    hd_plan_t p;
    char dir[1200], err[1024];
    hd_config_preset("tiny-a", &c);
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    cpu_cluster(&cl, 6, 1 * GIB_U);
    cl.ep = 3;
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages == NULL) {
        HD_CHECK_MSG(0, "%s", err);
        return;
    }
    HD_CHECK_INT_EQ(p.pp, 2);
    for (int r = 0; r < p.n_workers; r++) {
        const hd_plan_worker_t *w = &p.workers[r];
        const hd_plan_stage_t *sg = &p.stages[w->stage];
        uint8_t mask[64];
        hd_engine_h e = NULL;
        char eerr[512] = "";
        hd_plan_worker_expert_mask(w, c.n_routed_experts, mask);
        hd_engine_params_t ep = {.model_path = dir,
                                 .n_threads = 1,
                                 .layer_lo = sg->layer_lo,
                                 .layer_hi = sg->layer_hi,
                                 .load_mtp = sg->has_head,
                                 .expert_mask = mask,
                                 .err = eerr,
                                 .err_len = sizeof(eerr)};
        HD_CHECK_MSG(hd_engine_create(&ep, &e) == HD_OK, "worker %d: %s", r, eerr);
        if (e != NULL) {
            HD_CHECK_TRUE(hd_engine_last_stage(e) == sg->has_head);
            hd_engine_destroy(e);
        }
        for (int x = 0; x < c.n_routed_experts; x++) {
            HD_CHECK_TRUE(mask[x] == (x / 3 == w->column)); /* ceil(8 / 3) = 3 */
        }
    }
    hd_plan_cleanup(&p);
}

/* The stage split is the exact minimax optimum: compare with every split of tiny configs. */
HD_TEST(balance_optimal)
{
    const char *presets[] = {"tiny-a", "tiny-b", "medium"};
    for (size_t k = 0; k < 3; k++) {
        hd_model_config_t c;
        hd_config_preset(presets[k], &c);
        for (int pp = 1; pp <= 4 && pp <= c.n_layers; pp++) {
            hd_cluster_t cl;
            hd_plan_t p;
            char err[512];
            int n = c.n_layers, cut[8];
            double items[HD_MAX_LAYERS], best = 1e300;
            cpu_cluster(&cl, pp, 64 * GIB_U);
            cl.pp = pp;
            HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
            if (p.stages == NULL) {
                HD_CHECK_MSG(0, "%s pp %d: %s", presets[k], pp, err);
                continue;
            }
            check_plan(&c, &cl, &p, true);
            for (int b = 0; b < n; b++) {
                items[b] = p.block_cost[b];
            }
            items[0] += p.embed_cost;
            items[n - 1] += p.head_cost;
            for (int b = n; b < n + c.n_mtp_layers; b++) {
                items[n - 1] += p.block_cost[b];
            }
            /* enumerate cuts 0 < cut[1] < ... < cut[pp-1] < n (pp <= 4) */
            for (cut[1] = 1; cut[1] < (pp > 1 ? n : 2); cut[1]++) {
                for (cut[2] = cut[1] + 1; cut[2] < (pp > 2 ? n : cut[1] + 2); cut[2]++) {
                    for (cut[3] = cut[2] + 1; cut[3] < (pp > 3 ? n : cut[2] + 2); cut[3]++) {
                        int bounds[6], nb = 0;
                        double mx = 0.0;
                        bounds[nb++] = 0;
                        for (int s = 1; s < pp; s++) {
                            bounds[nb++] = cut[s];
                        }
                        bounds[nb++] = n;
                        for (int s = 0; s + 1 < nb; s++) {
                            double sum = 0.0;
                            for (int b = bounds[s]; b < bounds[s + 1]; b++) {
                                sum += items[b];
                            }
                            mx = sum > mx ? sum : mx;
                        }
                        best = mx < best ? mx : best;
                    }
                }
            }
            HD_CHECK_MSG(p.cost_max <= best * (1 + 1e-12), "%s pp %d: %g vs optimum %g", presets[k],
                         pp, p.cost_max, best);
            hd_plan_cleanup(&p);
        }
    }
}

/* Costs: CSA layers cost more than HCA, HCA more than SWA (spec §7.2 terms). */
HD_TEST(layer_costs)
{
    hd_model_config_t c;
    hd_cluster_t cl;
    hd_plan_t p;
    char err[512];
    hd_config_preset("flash", &c);
    gpu_cluster(&cl, 1, 8, 80 * GIB_U);
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages == NULL) {
        return;
    }
    /* flash: 0,1 SWA; 2 CSA; 3 HCA (layers >= 3 are not hash-routed) */
    HD_CHECK_TRUE(p.block_cost[4] > p.block_cost[3]);
    HD_CHECK_TRUE(p.block_cost[3] > p.block_cost[1]);
    HD_CHECK_STR_EQ(hd_plan_layer_type(p.ratio[4]), "CSA");
    HD_CHECK_STR_EQ(hd_plan_layer_type(p.ratio[3]), "HCA");
    HD_CHECK_STR_EQ(hd_plan_layer_type(p.ratio[0]), "SWA");
    /* the MTP entry holds a block and a head pass */
    HD_CHECK_TRUE(p.block_cost[43] > p.head_cost);
    /* longer reference contexts widen the CSA/HCA gap */
    {
        hd_plan_t q;
        cl.ref_context = 1048576;
        HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &q, err, sizeof(err)), HD_OK);
        if (q.stages != NULL) {
            HD_CHECK_TRUE(q.block_cost[4] - q.block_cost[3] > p.block_cost[4] - p.block_cost[3]);
            hd_plan_cleanup(&q);
        }
    }
    hd_plan_cleanup(&p);
}

/* When the natural grid does not fit, more stages per node shrink the replicated part. */
HD_TEST(grid_fallback)
{
    hd_model_config_t c;
    hd_cluster_t cl;
    hd_plan_t p;
    char err[1024];
    uint64_t need = 0;
    hd_config_preset("pro", &c);
    gpu_cluster(&cl, 4, 8, 80 * GIB_U);
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages == NULL) {
        return;
    }
    for (int r = 0; r < p.n_workers; r++) {
        const hd_plan_worker_t *w = &p.workers[r];
        uint64_t n = w->weights + w->buffers.total + w->reserve + w->kv_min_seq;
        need = n > need ? n : need;
    }
    hd_plan_cleanup(&p);
    cl.dev_mem = need - 1;
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages != NULL) {
        check_plan(&c, &cl, &p, false);
        HD_CHECK_TRUE(p.ep < 8 && p.grid_auto);
        HD_CHECK_MSG(strstr(p.grid_why, "4x8 does not fit") != NULL, "%s", p.grid_why);
        hd_plan_cleanup(&p);
    }
    /* fixed grid: the same memory is refused, naming the worker */
    cl.pp = 4;
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_ERR_NO_MEMORY);
    HD_CHECK_MSG(strstr(err, "short by 0.00 GiB (1 bytes)") != NULL, "%s", err);
    /* nothing fits: the closest grid is named */
    cl.pp = 0;
    cl.dev_mem = 8 * GIB_U;
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_ERR_NO_MEMORY);
    HD_CHECK_MSG(strstr(err, "no grid fits") != NULL && strstr(err, "closest") != NULL, "%s", err);
}

HD_TEST(kv_format_and_min_context)
{
    hd_model_config_t c;
    hd_cluster_t cl;
    hd_plan_t a, b;
    char err[512];
    hd_config_preset("pro", &c);
    gpu_cluster(&cl, 4, 8, 80 * GIB_U);
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &a, err, sizeof(err)), HD_OK);
    cl.kv_format = HD_KV_FMT_BF16;
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &b, err, sizeof(err)), HD_OK);
    if (a.stages != NULL && b.stages != NULL) {
        check_plan(&c, &cl, &b, false);
        HD_CHECK_TRUE(b.max_context[2] < a.max_context[2]);
    }
    hd_plan_cleanup(&a);
    hd_plan_cleanup(&b);
    /* a minimum context longer than the model's is clipped; a huge one on small GPUs refused */
    cl.kv_format = HD_KV_FMT_PACKED;
    cl.min_context = 1ull << 40;
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &a, err, sizeof(err)), HD_OK);
    if (a.stages != NULL) {
        HD_CHECK_INT_EQ(a.min_context, 1048576);
        hd_plan_cleanup(&a);
    }
    cl.pp = 4;
    cl.dev_mem = 40 * GIB_U; /* weights fit, 64 x 1M does not */
    cl.min_context = 1048576;
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &a, err, sizeof(err)), HD_OK);
    if (a.stages != NULL) {
        HD_CHECK_TRUE(a.max_context[0] == 1048576 && a.max_context[2] < 1048576);
        hd_plan_cleanup(&a);
    }
}

/* ---- refusals ---- */

static void expect_invalid(const hd_model_config_t *c, const hd_cluster_t *cl, const char *needle)
{
    hd_plan_t p;
    char err[1024] = "";
    hd_status_t st = hd_plan_make(c, cl, &p, err, sizeof(err));
    HD_CHECK_MSG(st == HD_ERR_INVALID_PARAM, "status %d for '%s' (%s)", (int)st, needle, err);
    HD_CHECK_MSG(strstr(err, needle) != NULL, "'%s' not in '%s'", needle, err);
    if (st == HD_OK) {
        hd_plan_cleanup(&p);
    }
}

HD_TEST(bad_inputs)
{
    hd_model_config_t a, pro;
    hd_cluster_t cl;
    hd_plan_t p;
    char err[256];
    hd_config_preset("tiny-a", &a);
    hd_config_preset("pro", &pro);

    cpu_cluster(&cl, 8, GIB_U);
    cl.pp = 8;
    expect_invalid(&a, &cl, "more stages than the model's 6 layers");
    cpu_cluster(&cl, 16, GIB_U);
    cl.ep = 16;
    expect_invalid(&a, &cl, "more expert-parallel workers than the model's 8 experts");
    cpu_cluster(&cl, 6, GIB_U);
    cl.ep = 6;
    expect_invalid(&a, &cl, "leaves columns 4..5 without experts");
    gpu_cluster(&cl, 2, 8, 80 * GIB_U);
    cl.ep = 3;
    expect_invalid(&pro, &cl, "ep 3 does not divide the 16 devices");
    gpu_cluster(&cl, 3, 4, 80 * GIB_U);
    cl.ep = 6;
    expect_invalid(&pro, &cl, "ep 6 neither divides nor is a multiple of the 4 devices per node");
    gpu_cluster(&cl, 1, 8, 80 * GIB_U);
    cl.pp = 3;
    cl.ep = 3;
    expect_invalid(&pro, &cl, "pp 3 x ep 3 is not the 8 devices");
    gpu_cluster(&cl, 0, 8, 80 * GIB_U);
    expect_invalid(&pro, &cl, "at least 1 node");
    gpu_cluster(&cl, 1, 8, 0);
    expect_invalid(&pro, &cl, "device memory is 0");
    cpu_cluster(&cl, 2, GIB_U);
    cl.nodes = 2;
    expect_invalid(&a, &cl, "nodes must be 1");
    cpu_cluster(&cl, 2, GIB_U);
    cl.ref_batch = 0;
    expect_invalid(&a, &cl, "must be > 0");
    cpu_cluster(&cl, 2, GIB_U);
    cl.step_tokens = 1ull << 40;
    expect_invalid(&a, &cl, "out of range");
    cpu_cluster(&cl, 2, GIB_U);
    cl.reserve = UINT64_MAX;
    expect_invalid(&a, &cl, "out of range");
    cpu_cluster(&cl, 2, GIB_U);
    cl.inter_bw = 0.0;
    expect_invalid(&a, &cl, "bandwidths");
    cpu_cluster(&cl, 2, GIB_U);
    a.dim = 100;
    expect_invalid(&a, &cl, "bad model config");
    /* all auto grids invalid: tiny-a on 64 workers (ep 64 > 8 experts, pp > 6 layers) */
    hd_config_preset("tiny-a", &a);
    cpu_cluster(&cl, 64, GIB_U);
    expect_invalid(&a, &cl, "no valid PP x EP grid");
    HD_CHECK_INT_EQ(hd_plan_make(NULL, &cl, &p, err, sizeof(err)), HD_ERR_INVALID_PARAM);
    HD_CHECK_INT_EQ(hd_plan_make(&a, &cl, &p, NULL, 0), HD_ERR_INVALID_PARAM);
}

/* ---- JSON ---- */

HD_TEST(json_output)
{
    hd_model_config_t c;
    hd_cluster_t cl;
    hd_plan_t p;
    hd_buf_t b;
    hd_json_t *root = NULL;
    char err[512];
    const hd_json_t *grid, *stages, *st3, *w, *ctx, *blocks;
    int64_t v = 0;
    bool flag = false;
    hd_config_preset("pro", &c);
    gpu_cluster(&cl, 4, 8, 80 * GIB_U);
    HD_CHECK_INT_EQ(hd_plan_make(&c, &cl, &p, err, sizeof(err)), HD_OK);
    if (p.stages == NULL) {
        return;
    }
    hd_buf_init(&b);
    hd_plan_write_json(&p, &b);
    HD_CHECK_TRUE(!b.failed);
    HD_CHECK_INT_EQ(hd_json_parse(b.data, b.len, NULL, &root, err, sizeof(err)), HD_OK);
    if (root == NULL) {
        HD_CHECK_MSG(0, "%s", err);
        goto out;
    }
    HD_CHECK_TRUE(hd_json_get_bool(root, "fits", &flag) && flag);
    HD_CHECK_STR_EQ(hd_json_get_str(root, "model"), "pro");
    HD_CHECK_TRUE(hd_json_get_i64(hd_json_get(root, "cluster"), "dev_mem", &v) &&
                  v == (int64_t)(80 * GIB_U));
    HD_CHECK_STR_EQ(hd_json_get_str(hd_json_get(root, "cluster"), "kind"), "gpu");
    grid = hd_json_get(root, "grid");
    HD_CHECK_TRUE(hd_json_get_i64(grid, "pp", &v) && v == 4);
    HD_CHECK_TRUE(hd_json_get_i64(grid, "ep", &v) && v == 8);
    HD_CHECK_TRUE(hd_json_get_bool(grid, "auto", &flag) && flag);
    HD_CHECK_TRUE(hd_json_get_str(grid, "why") != NULL);
    blocks = hd_json_get(hd_json_get(root, "cost"), "blocks");
    HD_CHECK_TRUE(blocks != NULL && blocks->n == 62);
    HD_CHECK_STR_EQ(hd_json_get_str(hd_json_at(blocks, 61), "type"), "SWA");
    HD_CHECK_TRUE(hd_json_get_bool(hd_json_at(blocks, 61), "mtp", &flag) && flag);
    stages = hd_json_get(root, "stages");
    HD_CHECK_TRUE(stages != NULL && stages->type == HD_JSON_ARRAY && stages->n == 4);
    st3 = hd_json_at(stages, 3);
    HD_CHECK_TRUE(hd_json_get_i64(st3, "layer_hi", &v) && v == 61);
    HD_CHECK_TRUE(hd_json_get_bool(st3, "head", &flag) && flag);
    HD_CHECK_TRUE(hd_json_get_i64(st3, "mtp", &v) && v == 1);
    HD_CHECK_TRUE(hd_json_get(st3, "workers") != NULL && hd_json_get(st3, "workers")->n == 8);
    w = hd_json_at(hd_json_get(st3, "workers"), 7);
    HD_CHECK_TRUE(hd_json_get_i64(w, "expert_lo", &v) && v == 336);
    HD_CHECK_TRUE(hd_json_get_i64(w, "expert_hi", &v) && v == 384);
    HD_CHECK_TRUE(hd_json_get_i64(hd_json_get(w, "weights"), "total", &v) &&
                  v == (int64_t)hd_plan_worker(&p, 3, 7)->weights);
    HD_CHECK_TRUE(hd_json_get_i64(hd_json_get(w, "buffers"), "total", &v) &&
                  v == (int64_t)hd_plan_worker(&p, 3, 7)->buffers.total);
    HD_CHECK_TRUE(hd_json_get_i64(w, "kv_budget", &v) &&
                  v == (int64_t)hd_plan_worker(&p, 3, 7)->kv_budget);
    ctx = hd_json_get(root, "max_context");
    HD_CHECK_TRUE(ctx != NULL && ctx->n == 3);
    HD_CHECK_TRUE(hd_json_get_i64(hd_json_at(ctx, 2), "batch", &v) && v == 64);
    HD_CHECK_TRUE(hd_json_get_i64(hd_json_at(ctx, 2), "context", &v) &&
                  v == (int64_t)p.max_context[2]);
    HD_CHECK_TRUE(hd_json_get_i64(hd_json_get(root, "comm"), "pp_inter", &v) && v == 3);
    HD_CHECK_TRUE(hd_json_get_i64(root, "max_seqs", &v) && v == (int64_t)p.max_seqs);
    HD_CHECK_TRUE(hd_json_get_i64(w, "max_seqs", &v) &&
                  v == (int64_t)hd_plan_worker(&p, 3, 7)->max_seqs);
    hd_json_free(root);
out:
    hd_buf_cleanup(&b);
    hd_plan_cleanup(&p);
}
