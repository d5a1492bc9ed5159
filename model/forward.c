/*
 * forward.c - one forward step of DeepSeek-V4 over a batch of sequences (spec 2-5).
 *
 * All tokens of the step (prefill chunks and decode tokens of several sequences) go through
 * every matrix together; per-sequence work (compressor state, candidate selection, KV
 * writes) walks each sequence's tokens in order. Matrices run through the kernel backend;
 * the small per-token math (norms, RoPE, mHC, Sinkhorn, pooling, routing) lives here.
 * Numerics: plain = fp32 everywhere, as transformers computes; official adds the FP8
 * activation quantisation, FP8/bf16 KV storage and the Hadamard + FP4 indexer path.
 */
#include "engine_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"
#include "hadal/pool.h"
#include "hadal/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- step state ---- */

typedef struct {
    hd_engine_h e;
    const hd_model_config_t *c;
    bool official;
    bool commit;          /* write KV state (false: MTP draft peek) */
    int n_items;
    hd_seq_h *seqs;       /* [n_items] */
    int64_t *first;       /* [n_items + 1] first token index of each item */
    int64_t *p0;          /* [n_items] position of each item's first token */
    int64_t T;            /* tokens in the step */
    const int32_t *tok;   /* [T] */
    int64_t *pos;         /* [T] */
    int *item;            /* [T] */
    float *X;             /* [T, N*d] residual streams */
    float *xin, *xn;      /* [T, d] */
    float *tmp;           /* [T, N*d] */
    float *mix;           /* [T, (2+N)N] */
    float *post, *comb;   /* [T, N], [T, N*N] */
    float *qr;            /* [T, q_lora] */
    float *q, *o;         /* [T, H*D] */
    float *kv;            /* [T, D] */
    float *oa;            /* [T, G*o_lora] */
    float *a;             /* [T, d] sub-layer output */
    float *cu, *cz;       /* [T, 2*D] compressor projections */
    float *iu, *iz;       /* [T, 2*Di] indexer compressor projections */
    float *qi;            /* [T, nI*Di] indexer queries */
    float *iw;            /* [T, nI] indexer head weights */
    float *logit;         /* [T, E] router logits */
    int32_t *sel;         /* [T, k] experts */
    float *wts;           /* [T, k] routing weights */
    float *ey;            /* [T, d] routed sum */
    float *eg, *eu;       /* [T, I] */
    float *ex;            /* [T, d] gathered rows */
    float *exy;           /* [T, d] */
    float *slot;          /* [T, k, d] per-slot expert outputs */
    int64_t *erows;       /* [T * k] */
    float *cosm, *sinm;   /* [T, R/2] main table */
    float *cosc, *sinc;   /* [T, R/2] compress table */
} step_t;

static float *step_alloc(size_t n, const char *tag, hd_status_t *st)
{
    float *p = hd_aligned_calloc(n ? n : 1, sizeof(float), tag);
    if (p == NULL) {
        *st = HD_ERR_NO_MEMORY;
    }
    return p;
}

static void step_free(step_t *s)
{
    void *p[] = {s->X, s->xin, s->xn, s->tmp, s->mix, s->post, s->comb, s->qr, s->q, s->o,
                 s->kv, s->oa, s->a, s->cu, s->cz, s->iu, s->iz, s->qi, s->iw, s->logit,
                 s->sel, s->wts, s->ey, s->eg, s->eu, s->ex, s->exy, s->erows, s->cosm,
                 s->sinm, s->cosc, s->sinc, s->pos, s->item, s->slot};
    for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++) {
        hd_free(p[i]);
    }
}

static hd_status_t step_buffers(step_t *s)
{
    const hd_model_config_t *c = s->c;
    size_t T = (size_t)s->T, N = (size_t)c->hc_mult, d = (size_t)c->dim;
    size_t HD = (size_t)c->n_heads * c->head_dim, R2 = (size_t)c->rope_dim / 2;
    size_t Di = (size_t)c->index_head_dim, nI = (size_t)c->index_n_heads;
    hd_status_t st = HD_OK;
    s->X = step_alloc(T * N * d, "streams", &st);
    s->xin = step_alloc(T * d, "step x", &st);
    s->xn = step_alloc(T * d, "step x", &st);
    s->tmp = step_alloc(T * N * d, "step tmp", &st);
    s->mix = step_alloc(T * (2 + N) * N, "hc mix", &st);
    s->post = step_alloc(T * N, "hc post", &st);
    s->comb = step_alloc(T * N * N, "hc comb", &st);
    s->qr = step_alloc(T * (size_t)c->q_lora_rank, "q lora", &st);
    s->q = step_alloc(T * HD, "q", &st);
    s->o = step_alloc(T * HD, "attn out", &st);
    s->kv = step_alloc(T * (size_t)c->head_dim, "kv", &st);
    s->oa = step_alloc(T * (size_t)c->o_groups * c->o_lora_rank, "o lora", &st);
    s->a = step_alloc(T * d, "sublayer out", &st);
    s->cu = step_alloc(T * 2 * (size_t)c->head_dim, "compressor u", &st);
    s->cz = step_alloc(T * 2 * (size_t)c->head_dim, "compressor z", &st);
    s->iu = step_alloc(T * 2 * Di, "indexer u", &st);
    s->iz = step_alloc(T * 2 * Di, "indexer z", &st);
    s->qi = step_alloc(T * nI * Di, "indexer q", &st);
    s->iw = step_alloc(T * nI, "indexer w", &st);
    s->logit = step_alloc(T * (size_t)c->n_routed_experts, "router logits", &st);
    s->sel = (int32_t *)step_alloc(T * (size_t)c->n_experts_per_tok, "router sel", &st);
    s->wts = step_alloc(T * (size_t)c->n_experts_per_tok, "router w", &st);
    s->ey = step_alloc(T * d, "moe y", &st);
    s->eg = step_alloc(T * (size_t)c->moe_inter, "moe g", &st);
    s->eu = step_alloc(T * (size_t)c->moe_inter, "moe u", &st);
    s->ex = step_alloc(T * d, "moe x", &st);
    s->exy = step_alloc(T * d, "moe xy", &st);
    s->slot = step_alloc(T * (size_t)c->n_experts_per_tok * d, "moe slots", &st);
    s->erows = hd_calloc(T * (size_t)c->n_experts_per_tok + 1, sizeof(int64_t), "moe rows");
    s->cosm = step_alloc(T * R2, "rope", &st);
    s->sinm = step_alloc(T * R2, "rope", &st);
    s->cosc = step_alloc(T * R2, "rope", &st);
    s->sinc = step_alloc(T * R2, "rope", &st);
    if (s->erows == NULL) {
        st = HD_ERR_NO_MEMORY;
    }
    return st;
}

/* ---- small math ---- */

static void rmsnorm(const float *x, const float *w, float *y, int64_t n, float eps)
{
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        ss += (double)x[i] * x[i];
    }
    float r = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) {
        y[i] = w ? w[i] * (x[i] * r) : x[i] * r;
    }
}

/* Rotate the last 2*n2 channels of @x in interleaved pairs by (cos, sin), sign -1 inverts. */
static void rope_apply(float *x, int64_t width, const float *cs, const float *sn, int n2,
                       float sign)
{
    float *r = x + width - 2 * n2;
    for (int p = 0; p < n2; p++) {
        float a = r[2 * p], b = r[2 * p + 1], co = cs[p], si = sign * sn[p];
        r[2 * p] = a * co - b * si;
        r[2 * p + 1] = b * co + a * si;
    }
}

static void rope_table(const float *inv_freq, int n2, int64_t pos, float *cs, float *sn)
{
    for (int p = 0; p < n2; p++) {
        float ang = (float)pos * inv_freq[p];
        cs[p] = cosf(ang);
        sn[p] = sinf(ang);
    }
}

static float sigmoidf(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

static float siluf(float x)
{
    return x / (1.0f + expf(-x));
}

/* ---- mHC ---- */

/*
 * hc_pre: mixes from the normalised flattened streams, then pre/post/comb (Sinkhorn), and
 * the collapsed sub-layer input xin = sum_k pre_k X[k].
 */
static hd_status_t hc_pre(step_t *s, const hd_weight_t *fn, const float *base,
                          const float *scale)
{
    const hd_model_config_t *c = s->c;
    int N = c->hc_mult, d = c->dim, mixw = (2 + N) * N;
    int64_t Nd = (int64_t)N * d;
    float eps = (float)c->hc_eps;
    float *rs = s->xin; /* reuse xin's first T floats as per-token rsqrt for official order */
    hd_status_t st;
    for (int64_t t = 0; t < s->T; t++) {
        const float *X = s->X + t * Nd;
        double ss = 0.0;
        for (int64_t i = 0; i < Nd; i++) {
            ss += (double)X[i] * X[i];
        }
        float r = 1.0f / sqrtf((float)(ss / (double)Nd) + (float)c->norm_eps);
        if (s->official) {
            rs[t] = r;
        } else {
            for (int64_t i = 0; i < Nd; i++) {
                s->tmp[t * Nd + i] = X[i] * r;
            }
        }
    }
    st = hd_kern_matmul(s->e->be, fn, s->official ? s->X : s->tmp, Nd, s->mix, mixw, s->T,
                        false);
    if (st != HD_OK) {
        return st;
    }
    for (int64_t t = 0; t < s->T; t++) {
        float *m = s->mix + t * mixw, pre[8], *post = s->post + t * N, *C = s->comb + t * N * N;
        if (s->official) {
            for (int i = 0; i < mixw; i++) {
                m[i] *= rs[t];
            }
        }
        for (int k = 0; k < N; k++) {
            pre[k] = sigmoidf(m[k] * scale[0] + base[k]) + eps;
            post[k] = 2.0f * sigmoidf(m[N + k] * scale[1] + base[N + k]);
        }
        for (int j = 0; j < N; j++) {
            float mx = -INFINITY, sum = 0.0f;
            for (int k = 0; k < N; k++) {
                C[j * N + k] = m[2 * N + j * N + k] * scale[2] + base[2 * N + j * N + k];
                mx = fmaxf(mx, C[j * N + k]);
            }
            for (int k = 0; k < N; k++) {
                C[j * N + k] = expf(C[j * N + k] - mx);
                sum += C[j * N + k];
            }
            for (int k = 0; k < N; k++) {
                C[j * N + k] = C[j * N + k] / sum + eps;
            }
        }
        for (int it = 0; it < c->hc_sinkhorn_iters; it++) {
            if (it > 0) {
                for (int j = 0; j < N; j++) {
                    float sum = 0.0f;
                    for (int k = 0; k < N; k++) {
                        sum += C[j * N + k];
                    }
                    for (int k = 0; k < N; k++) {
                        C[j * N + k] /= sum + eps;
                    }
                }
            }
            for (int k = 0; k < N; k++) {
                float sum = 0.0f;
                for (int j = 0; j < N; j++) {
                    sum += C[j * N + k];
                }
                for (int j = 0; j < N; j++) {
                    C[j * N + k] /= sum + eps;
                }
            }
        }
        const float *X = s->X + t * Nd;
        float *xi = s->tmp + t * Nd; /* tmp row is free again: stage xin there */
        for (int i = 0; i < d; i++) {
            float acc = 0.0f;
            for (int k = 0; k < N; k++) {
                acc += pre[k] * X[(int64_t)k * d + i];
            }
            xi[i] = acc;
        }
    }
    for (int64_t t = 0; t < s->T; t++) {
        memcpy(s->xin + t * d, s->tmp + t * Nd, (size_t)d * sizeof(float));
    }
    return HD_OK;
}

/* X_new[k] = post_k * out + sum_j comb[j][k] * X[j] */
static void hc_post(step_t *s, const float *out)
{
    const hd_model_config_t *c = s->c;
    int N = c->hc_mult, d = c->dim;
    int64_t Nd = (int64_t)N * d;
    for (int64_t t = 0; t < s->T; t++) {
        float *X = s->X + t * Nd, *old = s->tmp + t * Nd;
        const float *post = s->post + t * N, *C = s->comb + t * N * N, *o = out + t * d;
        memcpy(old, X, (size_t)Nd * sizeof(float));
        for (int k = 0; k < N; k++) {
            for (int i = 0; i < d; i++) {
                float acc = post[k] * o[i];
                for (int j = 0; j < N; j++) {
                    acc += C[j * N + k] * old[(int64_t)j * d + i];
                }
                X[(int64_t)k * d + i] = acc;
            }
        }
    }
}

/* ---- compressor ---- */

/*
 * Pool one compressed entry from @rows slots (values @v, gate logits @z, row stride @ld,
 * first @skip slots invalid): per-channel softmax over the slots, weighted sum.
 */
static void comp_pool(const float *const *v, const float *const *z, int nslots, int width,
                      float *out)
{
    for (int ch = 0; ch < width; ch++) {
        float mx = -INFINITY, den = 0.0f, acc = 0.0f;
        for (int j = 0; j < nslots; j++) {
            mx = fmaxf(mx, z[j][ch]);
        }
        for (int j = 0; j < nslots; j++) {
            float p = expf(z[j][ch] - mx);
            den += p;
            acc += p * v[j][ch];
        }
        out[ch] = acc / den;
    }
}

/*
 * Push token @t's projections (u, z: c*width each, ape not yet added) into the rolling state
 * and emit the entry when its window closes. Returns true when an entry was written to @out.
 */
static bool comp_push(step_t *s, const comp_w_t *cw, float *cu, float *cz, float *pu, float *pz,
                      int64_t pos, const float *u, const float *z, float *out)
{
    int m = cw->ratio, W = cw->width, cw2 = cw->coff * W;
    int r = (int)(pos % m);
    memcpy(cu + (int64_t)r * cw2, u, (size_t)cw2 * sizeof(float));
    for (int i = 0; i < cw2; i++) {
        cz[(int64_t)r * cw2 + i] = z[i] + cw->ape[(int64_t)r * cw2 + i];
    }
    if (r != m - 1) {
        return false;
    }
    const float *vv[2 * 128], *zz[2 * 128];
    int ns = 0;
    int64_t w = pos / m;
    if (cw->coff == 2) {
        if (w > 0) {
            for (int j = 0; j < m; j++) {
                vv[ns] = pu + (int64_t)j * W;
                zz[ns++] = pz + (int64_t)j * W;
            }
        }
        for (int j = 0; j < m; j++) {
            vv[ns] = cu + (int64_t)j * cw2 + W;
            zz[ns++] = cz + (int64_t)j * cw2 + W;
        }
    } else {
        for (int j = 0; j < m; j++) {
            vv[ns] = cu + (int64_t)j * cw2;
            zz[ns++] = cz + (int64_t)j * cw2;
        }
    }
    comp_pool(vv, zz, ns, W, out);
    if (cw->coff == 2) {
        for (int j = 0; j < m; j++) {
            memcpy(pu + (int64_t)j * W, cu + (int64_t)j * cw2, (size_t)W * sizeof(float));
            memcpy(pz + (int64_t)j * W, cz + (int64_t)j * cw2, (size_t)W * sizeof(float));
        }
    }
    if (s->official) {
        for (int i = 0; i < W; i++) {
            out[i] = hd_round_bf16(out[i]);
        }
    }
    rmsnorm(out, cw->norm, out, W, (float)s->c->norm_eps);
    float cs[64], sn[64];
    rope_table(s->e->inv_freq_comp, s->c->rope_dim / 2, w * m, cs, sn);
    rope_apply(out, W, cs, sn, s->c->rope_dim / 2, 1.0f);
    return true;
}

/* ---- attention ---- */

typedef struct {
    float *kvtab;     /* [rows, D] */
    int64_t rows;
    int32_t *cand;
    int64_t *cand_off;
    int64_t n_cand;
    float *ikeys;     /* decoded indexer keys of one item */
    float *iscore;
    int32_t *iorder;
} attn_scratch_t;

/* Top-k (k = min(topk, nv)) of scores[0..nv) by score desc, ties to the lower index;
 * the chosen indices are written ascending to @out. */
static int topk_select(const float *scores, int64_t nv, int topk, int32_t *tmp, int32_t *out)
{
    int k = (int)(nv < topk ? nv : topk);
    int n = 0;
    for (int64_t i = 0; i < nv; i++) {
        /* insertion into a sorted list of the best k so far */
        float v = scores[i];
        if (n == k && !(v > scores[tmp[n - 1]])) {
            continue;
        }
        int j = n < k ? n++ : k - 1;
        while (j > 0 && v > scores[tmp[j - 1]]) {
            tmp[j] = tmp[j - 1];
            j--;
        }
        tmp[j] = (int32_t)i;
    }
    for (int i = 0; i < k; i++) {
        out[i] = tmp[i];
    }
    for (int i = 1; i < k; i++) { /* ascending indices */
        int32_t v = out[i];
        int j = i;
        while (j > 0 && out[j - 1] > v) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = v;
    }
    return k;
}

static hd_status_t attn_layer(step_t *s, const layer_w_t *L, int li)
{
    hd_engine_h e = s->e;
    const hd_model_config_t *c = s->c;
    hd_kern_backend_t *be = e->be;
    int d = c->dim, H = c->n_heads, D = c->head_dim, R2 = c->rope_dim / 2, W = c->window;
    int G = c->o_groups, ol = c->o_lora_rank, Di = c->index_head_dim, nI = c->index_n_heads;
    int64_t HD = (int64_t)H * D, T = s->T;
    bool aq = s->official, csa = L->ratio == 4;
    hd_numerics_t num = e->numerics;
    float eps = (float)c->norm_eps;
    const float *cosT = L->ratio ? s->cosc : s->cosm, *sinT = L->ratio ? s->sinc : s->sinm;
    size_t eb = kv_entry_bytes(c, num);
    hd_status_t st;
    attn_scratch_t A = {0};

    HD_CHECK(hc_pre(s, &L->hc_attn_fn, L->hc_attn_base, L->hc_attn_scale));
    for (int64_t t = 0; t < T; t++) {
        rmsnorm(s->xin + t * d, L->attn_norm, s->xn + t * d, d, eps);
    }
    /* every projection of the normed input in one launch: query (a), key/value, and the
       compressors' and the indexer's (in this order, so neighbours share a prepared input) */
    {
        hd_op_matmul_t xo[7];
        int nx = 0, cw2 = L->ratio != 0 ? L->comp.coff * D : 0;
        xo[nx++] = (hd_op_matmul_t){.w = &L->wq_a, .x = s->xn, .y = s->qr, .n = T,
                                    .x_stride = d, .y_stride = c->q_lora_rank, .act_quant_fp8 = aq};
        xo[nx++] = (hd_op_matmul_t){.w = &L->wkv, .x = s->xn, .y = s->kv, .n = T, .x_stride = d,
                                    .y_stride = D, .act_quant_fp8 = aq};
        if (L->ratio != 0) {
            xo[nx++] = (hd_op_matmul_t){.w = &L->comp.wkv, .x = s->xn, .y = s->cu, .n = T,
                                        .x_stride = d, .y_stride = cw2};
            xo[nx++] = (hd_op_matmul_t){.w = &L->comp.wgate, .x = s->xn, .y = s->cz, .n = T,
                                        .x_stride = d, .y_stride = cw2};
        }
        if (csa) {
            xo[nx++] = (hd_op_matmul_t){.w = &L->icomp.wkv, .x = s->xn, .y = s->iu, .n = T,
                                        .x_stride = d, .y_stride = 2 * Di};
            xo[nx++] = (hd_op_matmul_t){.w = &L->icomp.wgate, .x = s->xn, .y = s->iz, .n = T,
                                        .x_stride = d, .y_stride = 2 * Di};
            xo[nx++] = (hd_op_matmul_t){.w = &L->i_wproj, .x = s->xn, .y = s->iw, .n = T,
                                        .x_stride = d, .y_stride = nI};
        }
        HD_CHECK(hd_kern_matmul_group(be, xo, nx));
    }
    /* query path */
    for (int64_t t = 0; t < T; t++) {
        float *qr = s->qr + t * c->q_lora_rank;
        rmsnorm(qr, L->q_norm, qr, c->q_lora_rank, eps);
    }
    {   /* both up-projections of the normed query latent: attention's and the indexer's */
        hd_op_matmul_t qo[2] = {
            {.w = &L->wq_b, .x = s->qr, .y = s->q, .n = T, .x_stride = c->q_lora_rank,
             .y_stride = HD, .act_quant_fp8 = aq},
            {.w = &L->i_wq_b, .x = s->qr, .y = s->qi, .n = T, .x_stride = c->q_lora_rank,
             .y_stride = (int64_t)nI * Di, .act_quant_fp8 = aq},
        };
        HD_CHECK(hd_kern_matmul_group(be, qo, csa ? 2 : 1));
    }
    for (int64_t t = 0; t < T; t++) {
        for (int h = 0; h < H; h++) {
            float *qh = s->q + t * HD + (int64_t)h * D;
            rmsnorm(qh, NULL, qh, D, eps);
            rope_apply(qh, D, cosT + t * R2, sinT + t * R2, R2, 1.0f);
        }
    }
    /* key/value path (its projection ran in the group above) */
    for (int64_t t = 0; t < T; t++) {
        float *kv = s->kv + t * D;
        uint8_t scratch[4096];
        rmsnorm(kv, L->kv_norm, kv, D, eps);
        rope_apply(kv, D, cosT + t * R2, sinT + t * R2, R2, 1.0f);
        if (eb <= sizeof(scratch)) {
            kv_entry_store(c, num, kv, scratch); /* stored values == used values */
        }
    }
    /* compressors and indexer projections */
    if (L->ratio != 0) {
        int cw2 = L->comp.coff * D;
        if (csa) { /* (the projections ran in the groups above) */
            float wscale = 1.0f / sqrtf((float)Di) * (1.0f / sqrtf((float)nI));
            for (int64_t t = 0; t < T; t++) {
                for (int h = 0; h < nI; h++) {
                    float *qh = s->qi + (t * nI + h) * Di;
                    rope_apply(qh, Di, s->cosc + t * R2, s->sinc + t * R2, R2, 1.0f);
                    if (s->official) {
                        hd_hadamard(qh, (size_t)Di);
                        hd_fp4_sim_blocks(qh, (size_t)Di, 32);
                    }
                }
                for (int h = 0; h < nI; h++) {
                    s->iw[t * nI + h] *= wscale;
                }
            }
        }
        /* walk each sequence's tokens in order through its compressor state */
        for (int it = 0; it < s->n_items && s->commit; it++) {
            layer_kv_t *K = &s->seqs[it]->layers[li];
            for (int64_t t = s->first[it]; t < s->first[it + 1]; t++) {
                float ent[1024], key[1024];
                if (comp_push(s, &L->comp, K->cu, K->cz, K->pu, K->pz, s->pos[t], s->cu + t * cw2,
                              s->cz + t * cw2, ent)) {
                    st = kv_comp_reserve(s->seqs[it], li, K->n_comp + 1);
                    if (st != HD_OK) {
                        return st;
                    }
                    kv_entry_store(c, num, ent, K->comp + (size_t)K->n_comp * eb);
                    if (csa) {
                        bool ok = comp_push(s, &L->icomp, K->icu, K->icz, K->ipu, K->ipz,
                                            s->pos[t], s->iu + t * 2 * Di, s->iz + t * 2 * Di, key);
                        hd_assert(ok);
                        if (s->official) {
                            hd_hadamard(key, (size_t)Di);
                        }
                        kv_ikey_store(c, num, key,
                                      K->ikeys + (size_t)K->n_comp * kv_ikey_bytes(c, num));
                    }
                    K->n_comp++;
                } else if (csa) {
                    comp_push(s, &L->icomp, K->icu, K->icz, K->ipu, K->ipz, s->pos[t],
                              s->iu + t * 2 * Di, s->iz + t * 2 * Di, key);
                }
            }
        }
    }
    /* assemble the kv table and every query's candidate list */
    int64_t rows = 0, n_cand = 0, max_nc = 0;
    for (int it = 0; it < s->n_items; it++) {
        int64_t p0 = s->p0[it], n = s->first[it + 1] - s->first[it];
        int64_t base = li < c->n_layers ? 0 : 1;
        int64_t rs = p0 - (W - 1) > base ? p0 - (W - 1) : base;
        int64_t nc = L->ratio ? s->seqs[it]->layers[li].n_comp : 0;
        rows += (p0 - rs) + n + nc;
        n_cand += n * ((int64_t)W + (csa ? c->index_topk : nc));
        if (nc > max_nc) {
            max_nc = nc;
        }
    }
    A.kvtab = hd_aligned_calloc((size_t)rows * D + 1, sizeof(float), "attn kv table");
    A.cand = hd_calloc((size_t)n_cand + 1, sizeof(int32_t), "attn candidates");
    A.cand_off = hd_calloc((size_t)T + 1, sizeof(int64_t), "attn offsets");
    if (csa) {
        A.ikeys = hd_aligned_calloc((size_t)max_nc * Di + 1, sizeof(float), "indexer keys");
        A.iscore = hd_calloc((size_t)max_nc + 1, sizeof(float), "indexer scores");
        A.iorder = hd_calloc((size_t)c->index_topk * 2 + 1, sizeof(int32_t), "indexer order");
    }
    if (!A.kvtab || !A.cand || !A.cand_off || (csa && (!A.ikeys || !A.iscore || !A.iorder))) {
        st = HD_ERR_NO_MEMORY;
        goto out;
    }
    int64_t row = 0, nc_used = 0;
    for (int it = 0; it < s->n_items; it++) {
        layer_kv_t *K = &s->seqs[it]->layers[li];
        int64_t p0 = s->p0[it], n = s->first[it + 1] - s->first[it];
        int64_t base = li < c->n_layers ? 0 : 1;
        int64_t rs = p0 - (W - 1) > base ? p0 - (W - 1) : base;
        int64_t ring_row = row, fresh_row = row + (p0 - rs), comp_row = fresh_row + n;
        int64_t nc = L->ratio ? K->n_comp : 0;
        for (int64_t p = rs; p < p0; p++) {
            kv_entry_load(c, num, K->ring + (size_t)(p % W) * eb, A.kvtab + (row++) * D);
        }
        memcpy(A.kvtab + row * D, s->kv + s->first[it] * D, (size_t)(n * D) * sizeof(float));
        row += n;
        for (int64_t w = 0; w < nc; w++) {
            kv_entry_load(c, num, K->comp + (size_t)w * eb, A.kvtab + (row++) * D);
        }
        if (csa) {
            for (int64_t w = 0; w < nc; w++) {
                kv_ikey_load(c, num, K->ikeys + (size_t)w * kv_ikey_bytes(c, num),
                             A.ikeys + w * Di);
            }
        }
        for (int64_t t = s->first[it]; t < s->first[it + 1]; t++) {
            int64_t p = s->pos[t];
            int64_t ws = p - (W - 1) > base ? p - (W - 1) : base;
            A.cand_off[t] = nc_used;
            for (int64_t q = ws; q <= p; q++) {
                A.cand[nc_used++] = (int32_t)(q < p0 ? ring_row + (q - rs) : fresh_row + (q - p0));
            }
            if (L->ratio == 0) {
                continue;
            }
            int64_t nv = (p + 1) / L->ratio;
            if (nv > nc) {
                nv = nc; /* only in a draft peek, which never reaches compressed layers */
            }
            if (!csa) {
                for (int64_t w = 0; w < nv; w++) {
                    A.cand[nc_used++] = (int32_t)(comp_row + w);
                }
                continue;
            }
            const float *qi = s->qi + t * nI * Di, *iw = s->iw + t * nI;
            for (int64_t w = 0; w < nv; w++) {
                float sc = 0.0f;
                for (int h = 0; h < nI; h++) {
                    float dot = 0.0f;
                    const float *qh = qi + (int64_t)h * Di, *kk = A.ikeys + w * Di;
                    for (int i = 0; i < Di; i++) {
                        dot += qh[i] * kk[i];
                    }
                    sc += iw[h] * (dot > 0.0f ? dot : 0.0f);
                }
                A.iscore[w] = sc;
            }
            int k = topk_select(A.iscore, nv, c->index_topk, A.iorder,
                                A.iorder + c->index_topk);
            for (int i = 0; i < k; i++) {
                A.cand[nc_used++] = (int32_t)(comp_row + A.iorder[c->index_topk + i]);
            }
        }
    }
    A.cand_off[T] = nc_used;
    {
        hd_op_t op = {.type = HD_OP_ATTN};
        op.attn = (hd_op_attn_t){.q = s->q, .n_q = T, .n_heads = H, .head_dim = D,
                                 .kv = A.kvtab, .cand = A.cand, .cand_off = A.cand_off,
                                 .sinks = L->sinks, .scale = 1.0f / sqrtf((float)D), .out = s->o};
        st = hd_kern_run(be, &op);
        if (st != HD_OK) {
            goto out;
        }
    }
    /* window ring: store this step's entries (values already equal to the stored ones) */
    for (int it = 0; it < s->n_items && s->commit; it++) {
        layer_kv_t *K = &s->seqs[it]->layers[li];
        for (int64_t t = s->first[it]; t < s->first[it + 1]; t++) {
            float tmpv[1024];
            memcpy(tmpv, s->kv + t * D, (size_t)D * sizeof(float));
            kv_entry_store(c, num, tmpv, K->ring + (size_t)(s->pos[t] % W) * eb);
        }
    }
    /* output: de-rotate, grouped low-rank projection, wo_b */
    for (int64_t t = 0; t < T; t++) {
        for (int h = 0; h < H; h++) {
            rope_apply(s->o + t * HD + (int64_t)h * D, D, cosT + t * R2, sinT + t * R2, R2, -1.0f);
        }
    }
    for (int g = 0; g < G; g++) {
        hd_weight_t wg = L->wo_a;
        wg.rows = ol;
        wg.data = (const uint8_t *)L->wo_a.data + (size_t)g * ol * L->wo_a.row_bytes;
        wg.row0 = L->wo_a.row0 + (int64_t)g * ol;
        st = hd_kern_matmul(be, &wg, s->o + (int64_t)g * (HD / G), HD, s->oa + (int64_t)g * ol,
                            (int64_t)G * ol, T, false);
        if (st != HD_OK) {
            goto out;
        }
    }
    st = hd_kern_matmul(be, &L->wo_b, s->oa, (int64_t)G * ol, s->a, d, T, aq);
    if (st == HD_OK) {
        hc_post(s, s->a);
    }
out:
    hd_free(A.kvtab);
    hd_free(A.cand);
    hd_free(A.cand_off);
    hd_free(A.ikeys);
    hd_free(A.iscore);
    hd_free(A.iorder);
    return st;
}

/* ---- MoE ---- */

static void swiglu(const hd_model_config_t *c, float *g, const float *u, int64_t n)
{
    float lim = (float)c->swiglu_limit;
    for (int64_t i = 0; i < n; i++) {
        float gg = g[i], uu = u[i];
        if (lim > 0.0f) {
            gg = fminf(gg, lim);
            uu = fminf(fmaxf(uu, -lim), lim);
        }
        g[i] = siluf(gg) * uu;
    }
}

/*
 * Expert outputs for @n rows: row r is x[(r / x_div)] (so slots of one token can share its
 * input row; x_div = k) for expert eid[r] with weight w[r]; out[r] is that slot's output,
 * weighted before w2 (official) or after it (plain). Rows are grouped by expert in
 * ascending id; each row's arithmetic does not depend on the grouping.
 */
static hd_status_t moe_local(hd_engine_h e, const layer_w_t *L, int64_t n, const float *x,
                             int x_div, const int32_t *eid, const float *w, float *out)
{
    const hd_model_config_t *c = &e->cfg;
    int d = c->dim, E = c->n_routed_experts, I = c->moe_inter;
    bool official = e->numerics == HD_NUMERICS_OFFICIAL;
    hd_status_t st = HD_ERR_NO_MEMORY;
    int64_t *cnt = NULL;
    hd_op_matmul_t *ops = NULL;
    int64_t *rows = hd_calloc((size_t)n + 1, sizeof(int64_t), "moe rows");
    float *ex = hd_aligned_calloc((size_t)n * d + 1, sizeof(float), "moe x");
    float *eg = hd_aligned_calloc((size_t)n * I + 1, sizeof(float), "moe g");
    float *eu = hd_aligned_calloc((size_t)n * I + 1, sizeof(float), "moe u");
    float *ey = hd_aligned_calloc((size_t)n * d + 1, sizeof(float), "moe y");
    if (!rows || !ex || !eg || !eu || !ey) {
        goto out;
    }
    for (int64_t r = 0; r < n; r++) {
        if (eid[r] < 0 || eid[r] >= E) {
            snprintf(e->err, sizeof(e->err), "layer %d: expert id %d out of range", L->index,
                     eid[r]);
            st = HD_ERR_INVALID_PARAM;
            goto out;
        }
    }
    /* rows grouped by expert (ascending row order within each, as one by one), then every
       expert's w1 and w3 in one grouped launch, SwiGLU, and every w2 in a second one */
    cnt = hd_calloc((size_t)E + 1, sizeof(int64_t), "moe expert offsets");
    ops = hd_calloc((size_t)2 * (size_t)E, sizeof(*ops), "moe matmuls");
    if (cnt == NULL || ops == NULL) {
        st = HD_ERR_NO_MEMORY;
        goto out;
    }
    for (int64_t r = 0; r < n; r++) {
        cnt[eid[r] + 1]++;
    }
    for (int xe = 0; xe < E; xe++) {
        if (cnt[xe + 1] > 0 && L->w1[xe].data == NULL) {
            snprintf(e->err, sizeof(e->err), "layer %d: expert %d is not loaded on this engine",
                     L->index, xe);
            st = HD_ERR_UNSUPPORTED;
            goto out;
        }
        cnt[xe + 1] += cnt[xe]; /* cnt[xe]: first slot of expert xe */
    }
    for (int64_t q = 0; q < n; q++) { /* stable counting sort by expert */
        int64_t at = cnt[eid[q]]++;
        rows[at] = q;
        memcpy(ex + at * d, x + (q / x_div) * d, (size_t)d * sizeof(float));
    }
    for (int xe = E; xe > 0; xe--) { /* the sort advanced each start to the next: undo */
        cnt[xe] = cnt[xe - 1];
    }
    cnt[0] = 0;
    int no = 0;
    for (int xe = 0; xe < E; xe++) {
        int64_t o = cnt[xe], ne = cnt[xe + 1] - o;
        if (ne == 0) {
            continue;
        }
        ops[no++] = (hd_op_matmul_t){.w = &L->w1[xe], .x = ex + o * d, .y = eg + o * I, .n = ne,
                                     .x_stride = d, .y_stride = I, .act_quant_fp8 = official};
        ops[no++] = (hd_op_matmul_t){.w = &L->w3[xe], .x = ex + o * d, .y = eu + o * I, .n = ne,
                                     .x_stride = d, .y_stride = I, .act_quant_fp8 = official};
    }
    HD_CHECK_GOTO(hd_kern_matmul_group(e->be, ops, no), st, out);
    swiglu(c, eg, eu, n * I);
    if (official) {
        for (int64_t r = 0; r < n; r++) {
            for (int i = 0; i < I; i++) {
                eg[r * I + i] *= w[rows[r]];
            }
        }
    }
    no = 0;
    for (int xe = 0; xe < E; xe++) {
        int64_t o = cnt[xe], ne = cnt[xe + 1] - o;
        if (ne == 0) {
            continue;
        }
        ops[no++] = (hd_op_matmul_t){.w = &L->w2[xe], .x = eg + o * I, .y = ey + o * d, .n = ne,
                                     .x_stride = I, .y_stride = d, .act_quant_fp8 = official};
    }
    HD_CHECK_GOTO(hd_kern_matmul_group(e->be, ops, no), st, out);
    for (int64_t r = 0; r < n; r++) {
        float *o = out + rows[r] * d;
        const float *v = ey + r * d;
        for (int i = 0; i < d; i++) {
            o[i] = official ? v[i] : v[i] * w[rows[r]];
        }
    }
    st = HD_OK;
out:
    hd_free(cnt);
    hd_free(ops);
    hd_free(rows);
    hd_free(ex);
    hd_free(eg);
    hd_free(eu);
    hd_free(ey);
    return st;
}

hd_status_t hd_engine_moe_local(hd_engine_h e, int layer, int64_t n, const float *x,
                                const int32_t *eid, const float *w, float *out)
{
    const hd_model_config_t *c = &e->cfg;
    bool mtp = layer == c->n_layers && e->has_mtp;
    if (layer < 0 || layer > c->n_layers || (!mtp && (layer < e->layer_lo || layer >= e->layer_hi))) {
        snprintf(e->err, sizeof(e->err), "layer %d is not on this engine", layer);
        return HD_ERR_INVALID_PARAM;
    }
    return moe_local(e, &e->layers[layer], n, x, 1, eid, w, out);
}

static hd_status_t moe_layer(step_t *s, const layer_w_t *L)
{
    hd_engine_h e = s->e;
    const hd_model_config_t *c = s->c;
    hd_kern_backend_t *be = e->be;
    int d = c->dim, E = c->n_routed_experts, k = c->n_experts_per_tok, I = c->moe_inter;
    int64_t T = s->T;
    bool aq = s->official;

    HD_CHECK(hc_pre(s, &L->hc_ffn_fn, L->hc_ffn_base, L->hc_ffn_scale));
    for (int64_t t = 0; t < T; t++) {
        rmsnorm(s->xin + t * d, L->ffn_norm, s->xn + t * d, d, (float)c->norm_eps);
    }
    HD_CHECK(hd_kern_matmul(be, &L->gate, s->xn, d, s->logit, E, T, false));
    for (int64_t t = 0; t < T; t++) {
        float *lg = s->logit + t * E;
        int32_t *sel = s->sel + t * k;
        float *w = s->wts + t * k;
        for (int x = 0; x < E; x++) {
            float z = lg[x];
            lg[x] = sqrtf(z > 20.0f ? z : log1pf(expf(z))); /* scores replace logits */
        }
        if (L->hash) {
            memcpy(sel, L->tid2eid + (int64_t)s->tok[t] * k, (size_t)k * sizeof(int32_t));
        } else {
            for (int i = 0; i < k; i++) { /* top-k of score + bias, ties to the lower id */
                int best = -1;
                float bv = -INFINITY;
                for (int x = 0; x < E; x++) {
                    bool taken = false;
                    for (int j = 0; j < i; j++) {
                        taken |= sel[j] == x;
                    }
                    float v = lg[x] + L->gate_bias[x];
                    if (!taken && (best < 0 || v > bv)) {
                        best = x;
                        bv = v;
                    }
                }
                sel[i] = best;
            }
        }
        float sum = 0.0f;
        for (int i = 0; i < k; i++) {
            w[i] = lg[sel[i]];
            sum += w[i];
        }
        if (!s->official) {
            sum += 1e-20f;
        }
        for (int i = 0; i < k; i++) {
            w[i] = w[i] / sum * (float)c->routed_scale;
        }
    }
    /* routed experts: every (token, slot) output, locally or through the exchange hook */
    if (e->moe_exchange != NULL) {
        HD_CHECK(e->moe_exchange(e->moe_user, L->index, T, s->xn, s->sel, s->wts, s->slot));
    } else {
        HD_CHECK(moe_local(e, L, T * k, s->xn, k, s->sel, s->wts, s->slot));
    }
    /* each token sums its slots in ascending expert id (the order of a single process) */
    memset(s->ey, 0, (size_t)(T * d) * sizeof(float));
    for (int64_t t = 0; t < T; t++) {
        int32_t order[64];
        int kk = k < 64 ? k : 64;
        for (int i = 0; i < kk; i++) {
            int j = i;
            while (j > 0 && s->sel[t * k + order[j - 1]] > s->sel[t * k + i]) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = i;
        }
        float *y = s->ey + t * d;
        for (int i = 0; i < kk; i++) {
            const float *v = s->slot + (t * k + order[i]) * d;
            for (int c2 = 0; c2 < d; c2++) {
                y[c2] += v[c2];
            }
        }
    }
    /* shared expert */
    {
        hd_op_matmul_t so[2] = {
            {.w = &L->sh_w1, .x = s->xn, .y = s->eg, .n = T, .x_stride = d, .y_stride = I,
             .act_quant_fp8 = aq},
            {.w = &L->sh_w3, .x = s->xn, .y = s->eu, .n = T, .x_stride = d, .y_stride = I,
             .act_quant_fp8 = aq},
        };
        HD_CHECK(hd_kern_matmul_group(be, so, 2));
    }
    swiglu(c, s->eg, s->eu, T * I);
    HD_CHECK(hd_kern_matmul(be, &L->sh_w2, s->eg, I, s->a, d, T, aq));
    for (int64_t i = 0; i < T * d; i++) {
        s->a[i] += s->ey[i];
    }
    hc_post(s, s->a);
    return HD_OK;
}

/* ---- head ---- */

/* logits for @n token rows of streams @X: hc_head collapse, final norm, fp32 head. */
static hd_status_t head_logits(step_t *s, const float *X, int64_t n, const hd_weight_t *fn,
                               const float *base, float scale, const float *norm, float *out)
{
    const hd_model_config_t *c = s->c;
    int N = c->hc_mult, d = c->dim;
    int64_t Nd = (int64_t)N * d;
    float *flat = hd_aligned_calloc((size_t)(n * Nd), sizeof(float), "head flat");
    float *mix = hd_calloc((size_t)(n * N), sizeof(float), "head mix");
    float *h = hd_aligned_calloc((size_t)(n * d), sizeof(float), "head h");
    hd_status_t st = HD_ERR_NO_MEMORY;
    if (flat == NULL || mix == NULL || h == NULL) {
        goto out;
    }
    for (int64_t t = 0; t < n; t++) {
        rmsnorm(X + t * Nd, NULL, flat + t * Nd, Nd, (float)c->norm_eps);
    }
    HD_CHECK_GOTO(hd_kern_matmul(s->e->be, fn, flat, Nd, mix, N, n, false), st, out);
    for (int64_t t = 0; t < n; t++) {
        float pre[8];
        for (int k = 0; k < N; k++) {
            pre[k] = sigmoidf(mix[t * N + k] * scale + base[k]) + (float)c->hc_eps;
        }
        for (int i = 0; i < d; i++) {
            float acc = 0.0f;
            for (int k = 0; k < N; k++) {
                acc += pre[k] * X[t * Nd + (int64_t)k * d + i];
            }
            h[t * d + i] = acc;
        }
        rmsnorm(h + t * d, norm, h + t * d, d, (float)c->norm_eps);
    }
    st = hd_kern_matmul(s->e->be, &s->e->head, h, d, out, c->vocab_size, n, false);
out:
    hd_free(flat);
    hd_free(mix);
    hd_free(h);
    return st;
}

/* ---- the step ---- */

/* Logits of every item that asks for them, through one head_logits call over all rows. */
static hd_status_t step_logits(step_t *s, hd_batch_item_t *items, int n, const int64_t *first)
{
    const hd_model_config_t *c = s->c;
    int64_t Nd = (int64_t)c->hc_mult * c->dim, V = c->vocab_size, R = 0, r = 0;
    float *X, *out;
    hd_status_t st;
    for (int i = 0; i < n; i++) {
        R += items[i].logits == HD_LOGITS_ALL ? items[i].n_tokens
             : items[i].logits == HD_LOGITS_LAST ? 1 : 0;
    }
    if (R == 0) {
        return HD_OK;
    }
    if (n == 1) { /* the rows are already contiguous and so is the output */
        int64_t r0 = items[0].logits == HD_LOGITS_ALL ? first[0] : first[1] - 1;
        return head_logits(s, s->X + r0 * Nd, R, &s->e->hc_head_fn, s->e->hc_head_base,
                           s->e->hc_head_scale, s->e->norm, items[0].logits_out);
    }
    X = hd_aligned_calloc((size_t)(R * Nd), sizeof(float), "head rows");
    out = hd_aligned_calloc((size_t)(R * V), sizeof(float), "head logits");
    if (X == NULL || out == NULL) {
        hd_free(X);
        hd_free(out);
        return HD_ERR_NO_MEMORY;
    }
    for (int i = 0; i < n; i++) {
        int64_t r0, nr;
        if (items[i].logits == HD_LOGITS_NONE) {
            continue;
        }
        r0 = items[i].logits == HD_LOGITS_ALL ? first[i] : first[i + 1] - 1;
        nr = first[i + 1] - r0;
        memcpy(X + r * Nd, s->X + r0 * Nd, (size_t)(nr * Nd) * sizeof(float));
        r += nr;
    }
    st = head_logits(s, X, R, &s->e->hc_head_fn, s->e->hc_head_base, s->e->hc_head_scale,
                     s->e->norm, out);
    r = 0;
    for (int i = 0; i < n && st == HD_OK; i++) {
        int64_t nr;
        if (items[i].logits == HD_LOGITS_NONE) {
            continue;
        }
        nr = items[i].logits == HD_LOGITS_ALL ? items[i].n_tokens : 1;
        memcpy(items[i].logits_out, out + r * V, (size_t)(nr * V) * sizeof(float));
        r += nr;
    }
    hd_free(X);
    hd_free(out);
    return st;
}

static void step_rope_tables(step_t *s)
{
    int R2 = s->c->rope_dim / 2;
    for (int64_t t = 0; t < s->T; t++) {
        rope_table(s->e->inv_freq_main, R2, s->pos[t], s->cosm + t * R2, s->sinm + t * R2);
        rope_table(s->e->inv_freq_comp, R2, s->pos[t], s->cosc + t * R2, s->sinc + t * R2);
    }
}

/* The MTP block over prepared inputs: s->X holds X' (e_proj e + h_proj hnorm(X)). */
static hd_status_t mtp_block(step_t *s, float *logits_out)
{
    const hd_model_config_t *c = s->c;
    const layer_w_t *L = &s->e->layers[c->n_layers];
    HD_CHECK(attn_layer(s, L, c->n_layers));
    HD_CHECK(moe_layer(s, L));
    if (logits_out == NULL) {
        return HD_OK;
    }
    return head_logits(s, s->X, s->T, &L->hc_head_fn, L->hc_head_base, L->hc_head_scale,
                       L->mnorm, logits_out);
}

/* Build MTP inputs for s->T pairs: prev streams @prev [T, N*d], tokens s->tok. */
static hd_status_t mtp_inputs(step_t *s, const float *prev)
{
    const hd_model_config_t *c = s->c;
    const layer_w_t *L = &s->e->layers[c->n_layers];
    int N = c->hc_mult, d = c->dim;
    int64_t Nd = (int64_t)N * d, T = s->T;
    float *hs = hd_aligned_calloc((size_t)(T * Nd), sizeof(float), "mtp hs");
    float *ep = hd_aligned_calloc((size_t)(T * d), sizeof(float), "mtp e");
    hd_status_t st = HD_ERR_NO_MEMORY;
    if (hs == NULL || ep == NULL) {
        goto out;
    }
    for (int64_t t = 0; t < T; t++) {
        hd_kern_weight_row(&s->e->embed, s->tok[t], s->xin + t * d);
        rmsnorm(s->xin + t * d, L->enorm, s->xin + t * d, d, (float)c->norm_eps);
        for (int k = 0; k < N; k++) {
            rmsnorm(prev + t * Nd + (int64_t)k * d, L->hnorm, hs + t * Nd + (int64_t)k * d, d,
                    (float)c->norm_eps);
        }
    }
    HD_CHECK_GOTO(hd_kern_matmul(s->e->be, &L->e_proj, s->xin, d, ep, d, T, s->official), st,
                  out);
    /* h_proj on every stream: T*N rows of d */
    HD_CHECK_GOTO(hd_kern_matmul(s->e->be, &L->h_proj, hs, d, s->X, d, T * N, s->official), st,
                  out);
    for (int64_t t = 0; t < T; t++) {
        for (int k = 0; k < N; k++) {
            float *x = s->X + t * Nd + (int64_t)k * d;
            for (int i = 0; i < d; i++) {
                x[i] += ep[t * d + i];
            }
        }
    }
    st = HD_OK;
out:
    hd_free(hs);
    hd_free(ep);
    return st;
}

static hd_status_t step_validate(hd_engine_h e, hd_batch_item_t *items, int n)
{
    const hd_model_config_t *c = &e->cfg;
    if (n <= 0 || items == NULL) {
        snprintf(e->err, sizeof(e->err), "empty batch");
        return HD_ERR_INVALID_PARAM;
    }
    for (int i = 0; i < n; i++) {
        hd_seq_h sq = items[i].seq;
        if (sq == NULL || sq->eng != e || sq->broken) {
            snprintf(e->err, sizeof(e->err), "item %d: invalid or broken sequence", i);
            return HD_ERR_INVALID_PARAM;
        }
        if (items[i].n_tokens <= 0 || items[i].tokens == NULL) {
            snprintf(e->err, sizeof(e->err), "item %d: no tokens", i);
            return HD_ERR_INVALID_PARAM;
        }
        if (e->layer_lo > 0 && items[i].streams_in == NULL) {
            snprintf(e->err, sizeof(e->err), "item %d: stage starting at layer %d needs streams_in",
                     i, e->layer_lo);
            return HD_ERR_INVALID_PARAM;
        }
        if (e->layer_hi < c->n_layers &&
            (items[i].streams_out == NULL || items[i].logits != HD_LOGITS_NONE)) {
            snprintf(e->err, sizeof(e->err),
                     "item %d: stage ending before the last layer needs streams_out and no logits",
                     i);
            return HD_ERR_INVALID_PARAM;
        }
        if (items[i].logits != HD_LOGITS_NONE && items[i].logits_out == NULL) {
            snprintf(e->err, sizeof(e->err), "item %d: logits requested without a buffer", i);
            return HD_ERR_INVALID_PARAM;
        }
        if (sq->len + items[i].n_tokens > c->max_pos) {
            snprintf(e->err, sizeof(e->err), "item %d: %lld tokens exceed the context of %d", i,
                     (long long)(sq->len + items[i].n_tokens), c->max_pos);
            return HD_ERR_INVALID_PARAM;
        }
        for (int64_t t = 0; t < items[i].n_tokens; t++) {
            if (items[i].tokens[t] < 0 || items[i].tokens[t] >= c->vocab_size) {
                snprintf(e->err, sizeof(e->err), "item %d: token id %d outside [0, %d)", i,
                         items[i].tokens[t], c->vocab_size);
                return HD_ERR_INVALID_PARAM;
            }
        }
        for (int j = 0; j < i; j++) {
            if (items[j].seq == sq) {
                snprintf(e->err, sizeof(e->err), "items %d and %d extend the same sequence", j, i);
                return HD_ERR_INVALID_PARAM;
            }
        }
    }
    return HD_OK;
}

static hd_status_t step_setup(hd_engine_h e, step_t *s, int n_items, hd_seq_h *seqs,
                              int64_t *first, int64_t *p0, const int32_t *tok)
{
    s->e = e;
    s->c = &e->cfg;
    s->official = e->numerics == HD_NUMERICS_OFFICIAL;
    s->commit = true;
    s->n_items = n_items;
    s->seqs = seqs;
    s->first = first;
    s->p0 = p0;
    s->T = first[n_items];
    s->tok = tok;
    s->pos = hd_calloc((size_t)s->T, sizeof(int64_t), "step pos");
    s->item = hd_calloc((size_t)s->T, sizeof(int), "step item");
    if (s->pos == NULL || s->item == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    for (int it = 0; it < n_items; it++) {
        for (int64_t t = first[it]; t < first[it + 1]; t++) {
            s->pos[t] = p0[it] + (t - first[it]);
            s->item[t] = it;
        }
    }
    HD_CHECK(step_buffers(s));
    step_rope_tables(s);
    return HD_OK;
}

/* Feed MTP pairs (X_{p-1}, tok_p) for every position p of this step not yet fed. */
static hd_status_t step_mtp_commit(hd_engine_h e, hd_batch_item_t *items, int n,
                                   const float *Xfinal, const int64_t *first)
{
    const hd_model_config_t *c = &e->cfg;
    int64_t Nd = (int64_t)c->hc_mult * c->dim;
    int64_t T = 0;
    hd_status_t st = HD_ERR_NO_MEMORY;
    for (int i = 0; i < n; i++) {
        int64_t p0 = items[i].seq->len;
        int64_t from = items[i].seq->mtp_len > 1 ? items[i].seq->mtp_len : 1;
        int64_t to = p0 + items[i].n_tokens;
        T += to > from ? to - from : 0;
    }
    if (T == 0) {
        /* an expert-parallel row exchanges at every MoE layer, with or without tokens */
        return e->moe_exchange ? e->moe_exchange(e->moe_user, c->n_layers, 0, NULL, NULL, NULL,
                                                 NULL)
                               : HD_OK;
    }
    int32_t *tok = hd_calloc((size_t)T, sizeof(int32_t), "mtp tokens");
    float *prev = hd_aligned_calloc((size_t)(T * Nd), sizeof(float), "mtp prev");
    int64_t *f2 = hd_calloc((size_t)n + 1, sizeof(int64_t), "mtp first");
    int64_t *p2 = hd_calloc((size_t)n, sizeof(int64_t), "mtp p0");
    hd_seq_h *sq = hd_calloc((size_t)n, sizeof(hd_seq_h), "mtp seqs");
    step_t s = {0};
    if (!tok || !prev || !f2 || !p2 || !sq) {
        goto out;
    }
    int64_t o = 0;
    for (int i = 0; i < n; i++) {
        hd_seq_h q = items[i].seq;
        int64_t p0 = q->len, from = q->mtp_len > 1 ? q->mtp_len : 1;
        int64_t to = p0 + items[i].n_tokens;
        f2[i] = o;
        p2[i] = from;
        sq[i] = q;
        for (int64_t p = from; p < to; p++, o++) {
            tok[o] = items[i].tokens[p - p0];
            const float *src = p - 1 < p0 ? q->last_streams : Xfinal + (first[i] + p - 1 - p0) * Nd;
            memcpy(prev + o * Nd, src, (size_t)Nd * sizeof(float));
        }
    }
    f2[n] = o;
    HD_CHECK_GOTO(step_setup(e, &s, n, sq, f2, p2, tok), st, out);
    HD_CHECK_GOTO(mtp_inputs(&s, prev), st, out);
    HD_CHECK_GOTO(mtp_block(&s, NULL), st, out);
    for (int i = 0; i < n; i++) {
        items[i].seq->mtp_len = items[i].seq->len + items[i].n_tokens;
    }
    st = HD_OK;
out:
    step_free(&s);
    hd_free(tok);
    hd_free(prev);
    hd_free(f2);
    hd_free(p2);
    hd_free(sq);
    return st;
}

hd_status_t hd_engine_step(hd_engine_h e, hd_batch_item_t *items, int n)
{
    const hd_model_config_t *c = &e->cfg;
    int N = c->hc_mult, d = c->dim;
    int64_t Nd = (int64_t)N * d;
    hd_status_t st = step_validate(e, items, n);
    step_t s = {0};
    int64_t *first = NULL, *p0 = NULL;
    hd_seq_h *seqs = NULL;
    int32_t *tok = NULL;
    if (st != HD_OK) {
        hd_debug(HD_SUBSYS_MODEL, "step refused: %s", e->err);
        return st;
    }
    first = hd_calloc((size_t)n + 1, sizeof(int64_t), "step first");
    p0 = hd_calloc((size_t)n, sizeof(int64_t), "step p0");
    seqs = hd_calloc((size_t)n, sizeof(hd_seq_h), "step seqs");
    st = HD_ERR_NO_MEMORY;
    if (first == NULL || p0 == NULL || seqs == NULL) {
        goto out;
    }
    for (int i = 0; i < n; i++) {
        first[i + 1] = first[i] + items[i].n_tokens;
        p0[i] = items[i].seq->len;
        seqs[i] = items[i].seq;
    }
    tok = hd_calloc((size_t)first[n], sizeof(int32_t), "step tokens");
    if (tok == NULL) {
        goto out;
    }
    for (int i = 0; i < n; i++) {
        memcpy(tok + first[i], items[i].tokens, (size_t)items[i].n_tokens * sizeof(int32_t));
    }
    HD_CHECK_GOTO(step_setup(e, &s, n, seqs, first, p0, tok), st, out);
    /* from here on a failure leaves the sequences' KV inconsistent */
    for (int64_t t = 0; t < s.T; t++) {
        if (e->layer_lo > 0) {
            const hd_batch_item_t *it = &items[s.item[t]];
            memcpy(s.X + t * Nd, it->streams_in + (t - first[s.item[t]]) * Nd,
                   (size_t)Nd * sizeof(float));
            continue;
        }
        hd_kern_weight_row(&e->embed, tok[t], s.xin);
        for (int k = 0; k < N; k++) {
            memcpy(s.X + t * Nd + (int64_t)k * d, s.xin, (size_t)d * sizeof(float));
        }
    }
    for (int li = e->layer_lo; li < e->layer_hi; li++) {
        HD_CHECK_GOTO(attn_layer(&s, &e->layers[li], li), st, broken);
        HD_CHECK_GOTO(moe_layer(&s, &e->layers[li]), st, broken);
        for (int i = 0; i < n; i++) {
            if (items[i].hidden_out != NULL) {
                float *dst = items[i].hidden_out + (int64_t)li * items[i].n_tokens * Nd;
                memcpy(dst, s.X + first[i] * Nd, (size_t)(items[i].n_tokens * Nd) * sizeof(float));
            }
        }
    }
    if (e->layer_hi < c->n_layers) {
        for (int i = 0; i < n; i++) {
            memcpy(items[i].streams_out, s.X + first[i] * Nd,
                   (size_t)(items[i].n_tokens * Nd) * sizeof(float));
        }
    }
    if (e->layer_hi == c->n_layers) {
        /* one head matmul for every row that wants logits: the head is read once per step */
        HD_CHECK_GOTO(step_logits(&s, items, n, first), st, broken);
    }
    if (e->has_mtp) {
        HD_CHECK_GOTO(step_mtp_commit(e, items, n, s.X, first), st, broken);
    }
    for (int i = 0; i < n; i++) {
        memcpy(items[i].seq->last_streams, s.X + (first[i + 1] - 1) * Nd,
               (size_t)Nd * sizeof(float));
        items[i].seq->len += items[i].n_tokens;
    }
    st = HD_OK;
    goto out;
broken:
    for (int i = 0; i < n; i++) {
        items[i].seq->broken = true;
    }
    hd_error(HD_SUBSYS_MODEL, "forward step failed (%s); %d sequence(s) must be dropped",
             hd_status_string(st), n);
out:
    step_free(&s);
    hd_free(first);
    hd_free(p0);
    hd_free(seqs);
    hd_free(tok);
    return st;
}

hd_status_t hd_engine_idle_step(hd_engine_h e)
{
    const hd_model_config_t *c = &e->cfg;
    if (e->moe_exchange == NULL) {
        return HD_OK;
    }
    for (int li = e->layer_lo; li < e->layer_hi; li++) {
        HD_CHECK(e->moe_exchange(e->moe_user, li, 0, NULL, NULL, NULL, NULL));
    }
    if (e->has_mtp) {
        HD_CHECK(e->moe_exchange(e->moe_user, c->n_layers, 0, NULL, NULL, NULL, NULL));
    }
    return HD_OK;
}

hd_status_t hd_engine_mtp_draft(hd_engine_h e, hd_seq_h seq, int32_t next_token,
                                float *logits_out)
{
    const hd_model_config_t *c = &e->cfg;
    int64_t first[2] = {0, 1}, p0 = seq->len;
    step_t s = {0};
    hd_status_t st;
    if (!e->has_mtp) {
        snprintf(e->err, sizeof(e->err), "no MTP block loaded");
        return HD_ERR_UNSUPPORTED;
    }
    if (seq->len < 1 || seq->broken || next_token < 0 || next_token >= c->vocab_size ||
        seq->len >= c->max_pos) {
        snprintf(e->err, sizeof(e->err), "MTP draft needs a non-empty healthy sequence and a valid token");
        return HD_ERR_INVALID_PARAM;
    }
    st = step_setup(e, &s, 1, &seq, first, &p0, &next_token);
    if (st == HD_OK) {
        s.commit = false;
        st = mtp_inputs(&s, seq->last_streams);
    }
    if (st == HD_OK) {
        st = mtp_block(&s, logits_out);
    }
    step_free(&s);
    return st;
}
