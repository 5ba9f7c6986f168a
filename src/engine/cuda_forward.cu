// The forward pass on the device, over the same flat batch as the CPU one (engine/forward.c):
// embedding; per layer RMSNorm, fused q/k/v product, q/k norm + RoPE + K/V into the paged cache,
// attention, o-product added to the residual, RMSNorm, then the dense MLP or the MoE block
// (router, softmax/top-k into the routing capture buffer, stable sort by expert, grouped gate/up
// product with SwiGLU, grouped down product, weighted combine with the shared expert); final norm
// of the rows that want logits and the lm_head product. Routing is copied to pinned host memory
// once per pass and handed to the sink layer by layer.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include <cuda_profiler_api.h>

#include "engine/cuda_internal.h"

void mt_gpu_scratch_release(GpuScratch *s) {
    void *dev[] = {s->h, s->h_combined, s->combine_sums, s->combine_ready, s->qkv, s->router, s->ye, s->ys,
                   s->sg, s->logits, s->xb, s->qb, s->att, s->act, s->sact, s->cap_ids, s->cap_w, s->offsets,
                   s->tile_offsets, s->counts, s->active, s->n_active, s->src_rows, s->pair_pos, s->next,
                   s->logprob, s->top_ids, s->top_lps, s->sort_chunks, s->argmax_scratch, s->split_part};
    for (void *p : dev) cudaFree(p);
    for (HostOut &o : s->out) {
        void *host[] = {o.cap_ids, o.cap_w, o.next, o.logprob, o.top_ids, o.top_lps, o.ids_lp};
        for (void *p : host) cudaFreeHost(p);
    }
    cudaFree(s->ids_lp);
    cudaFree(s->adj);
    cudaFreeHost(s->h_adj);
}

namespace {

const char *const STAGE_NAMES[PROF_COUNT] = {"embed", "rmsnorm", "qkv", "qk_prep", "attention", "o_proj", "router",
                                            "route+sort", "experts gate/up", "experts down", "shared expert",
                                            "combine", "dense mlp", "logits"};

// Marks the start of `stage` (and the end of the previous one) when profiling.
void prof_mark(GpuModel *g, int stage) {
    GpuProfile &p = g->prof;
    if (!p.on || p.n >= 4096) return;
    if (!p.ev[p.n]) cudaEventCreate(&p.ev[p.n]);
    cudaEventRecord(p.ev[p.n], g->stream);
    p.stage[p.n++] = stage;
}

// After the pass has synchronised: sums the time between marks per stage.
void prof_collect(GpuModel *g) {
    GpuProfile &p = g->prof;
    if (!p.on) return;
    for (int i = 0; i + 1 < p.n; i++) {
        float ms = 0.0f;
        cudaEventElapsedTime(&ms, p.ev[i], p.ev[i + 1]);
        if (p.stage[i] >= 0) p.ms[p.stage[i]] += ms;
    }
    p.n = 0;
    p.passes++;
}

constexpr int SMALL_BATCH = 64;   // at most this many tokens: expert products on the small (streaming) path
constexpr int SMALL_DENSE = 16;   // at most this many rows: dense products on the small path
constexpr size_t TILE_INTS = sizeof(mt_attn_tile) / sizeof(int32_t);   // an attention tile in the input upload
constexpr int ADJUST_BLOCKS = 32;   // blocks of the logit changes' launch (fixed: a graph takes any count)
constexpr int SPLIT_MAX = 256;    // at most this many rows: dense products may split K over blocks
constexpr int WIDE_TILES = 1024;  // from this many rows per matrix (on average): 128-row large-path tiles
constexpr int WIDE_TILES_WGMMA = 256;   // the same where the wgmma path (128-row tiles only) is used
constexpr int L2_AHEAD_MAX = 8;   // at most this many tokens: weights ahead in L2 (measured at batches 1-8)

// Whether a comparison switch (MOETRACE_CUDA_...=0) turns its optimisation off.
bool switched_off(const char *name) {
    const char *v = getenv(name);
    return v && !strcmp(v, "0");
}

int tile_rows_for(int rows_per_matrix) {
    return rows_per_matrix >= (mt_cuda_wgmma_usable() ? WIDE_TILES_WGMMA : WIDE_TILES) ? 128 : 64;
}

int ceil_div(int a, int b) { return (a + b - 1) / b; }

size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

// Every buffer of the pass scratch for s.cap token slots and s.cap_logits rows of logits, once
// each: dev(ptr, count) for device buffers, host(ptr, count) for their pinned host mirrors (count in
// elements of *ptr). Sizing the scratch and allocating it walk this one list.
template <class Dev, class Host>
void walk_scratch(GpuScratch &s, const GpuModel *g, const mt_config *c, Dev &&dev, Host &&host) {
    size_t N = (size_t)s.cap, L = (size_t)s.cap_logits, H = (size_t)c->hidden_size, k = (size_t)c->top_k;
    size_t E = (size_t)c->num_experts;
    size_t qd = (size_t)c->num_attention_heads * c->head_dim, kvd = (size_t)c->num_key_value_heads * c->head_dim;
    size_t inter = max_sz(max_sz((size_t)c->intermediate_size, (size_t)c->moe_intermediate_size),
                          (size_t)c->shared_expert_intermediate_size);
    size_t nk = N * k, moe_l = (size_t)(g->num_moe_layers ? g->num_moe_layers : 1);
    // slice sums of split dense products: every dense matrix but lm_head
    s.split_cap = (int)(N < (size_t)SPLIT_MAX ? N : (size_t)SPLIT_MAX);
    s.split_rows = mt_round16((int)max_sz(max_sz(qd + 2 * kvd, H), max_sz(2 * inter, E)));   // rows of q/k/v, o, MLPs, router
    s.ye_bytes = nk * H * sizeof(float);
    dev(s.h, N * H);
    dev(s.h_combined, N * H);
    dev(s.combine_sums, 16);
    dev(s.combine_ready, 1);
    dev(s.qkv, N * (qd + 2 * kvd));
    dev(s.router, N * (size_t)mt_round16((int)E));
    dev(s.ye, nk * H);
    dev(s.ys, N * H);
    dev(s.sg, N * 16);
    dev(s.logits, L * mt_round16(c->vocab_size));
    dev(s.xb, N * max_sz(H, qd));
    dev(s.qb, N * qd);
    dev(s.att, N * qd);
    dev(s.act, max_sz(nk, N) * inter);
    dev(s.sact, N * inter);
    dev(s.cap_ids, moe_l * nk);
    dev(s.cap_w, moe_l * nk);
    dev(s.offsets, E + 1);
    dev(s.tile_offsets, E + 1);
    dev(s.counts, E);
    dev(s.active, 3 * E);
    dev(s.n_active, 1);
    dev(s.src_rows, nk);
    dev(s.pair_pos, nk);
    dev(s.next, L);
    dev(s.logprob, L);
    dev(s.top_ids, L * MT_TOP_LOGPROBS_MAX);
    dev(s.top_lps, L * MT_TOP_LOGPROBS_MAX);
    dev(s.argmax_scratch, 2 * mt_cuda_argmax_scratch((int)L, c->vocab_size));
    dev(s.sort_chunks, ((nk + 1023) / 1024) * E);
    dev(s.split_part, (size_t)8 * s.split_cap * s.split_rows);
    for (HostOut &o : s.out) {
        host(o.cap_ids, moe_l * nk);
        host(o.cap_w, moe_l * nk);
        host(o.next, L);
        host(o.logprob, L);
        host(o.top_ids, L * MT_TOP_LOGPROBS_MAX);
        host(o.top_lps, L * MT_TOP_LOGPROBS_MAX);
    }
}

// Device bytes of the pass scratch for cap token slots and cap_logits rows of logits.
size_t scratch_device_bytes(const GpuModel *g, const mt_config *c, int cap, int cap_logits) {
    GpuScratch s = {};
    s.cap = cap;
    s.cap_logits = cap_logits;
    size_t bytes = 0;
    walk_scratch(s, g, c, [&](auto *&p, size_t n) { bytes += max_sz(n * sizeof *p, 16); }, [](auto *&, size_t) {});
    return bytes;
}

// Frees the pass scratch and clears its state, keeping the batch inputs (ensure_graph_input).
void clear_scratch(GpuScratch &s) {
    mt_gpu_scratch_release(&s);
    int32_t *in = s.in, *h_in = s.h_in;
    size_t in_cap = s.in_cap;
    memset(&s, 0, sizeof s);
    s.in = in;
    s.h_in = h_in;
    s.in_cap = in_cap;
}

// Replaces the pass scratch with one for cap token slots and cap_logits rows of logits. On failure
// nothing is left allocated (both capacities 0, so the next pass tries again) and err names the
// call; the batch inputs (ensure_graph_input) are kept either way.
int replace_scratch(GpuModel *g, const mt_config *c, int cap, int cap_logits, mt_err *err) {
    GpuScratch &s = g->s;
    if (g->inflight > 0)   // its picks and host copies are still to be read
        return mt_errf(err, "a pass of %d tokens and %d rows of logits needs more scratch than was reserved, and a pass "
                            "is in flight (reserve the largest pass first: mt_forward_reserve)", cap, cap_logits);
    MT_CU(err, cudaStreamSynchronize(g->stream));
    // Scratch buffers are allocated outside the weights' list so they can be replaced; captured
    // graphs point into them.
    mt_gpu_graphs_clear(g);
    clear_scratch(s);
    s.cap = cap;
    s.cap_logits = cap_logits;
    cudaError_t rc = cudaSuccess;
    const char *failed = nullptr;
    walk_scratch(
        s, g, c,
        [&](auto *&p, size_t n) {
            if (rc == cudaSuccess && (rc = cudaMalloc((void **)&p, max_sz(n * sizeof *p, 16))) != cudaSuccess)
                failed = "cudaMalloc (pass scratch)";
        },
        [&](auto *&p, size_t n) {
            if (rc == cudaSuccess && (rc = cudaMallocHost((void **)&p, max_sz(n * sizeof *p, 16))) != cudaSuccess)
                failed = "cudaMallocHost (pass scratch)";
        });
    if (rc == cudaSuccess && (rc = cudaMemset(s.combine_ready, 0, sizeof(int))) != cudaSuccess) failed = "cudaMemset";
    if (rc != cudaSuccess) {
        clear_scratch(s);
        return mt_cuda_fail(err, failed, rc);
    }
    return 0;
}

// Grows the scratch to hold a batch of n tokens (n_logits rows of logits), doubling what it held;
// an engine reserves its largest pass up front (mt_cuda_reserve), so its passes never get here.
int ensure_scratch(GpuModel *g, const mt_config *c, int n, int n_logits, mt_err *err) {
    GpuScratch &s = g->s;
    if (n <= s.cap && n_logits <= s.cap_logits) return 0;
    int cap = s.cap ? s.cap : 64;
    while (cap < n) cap *= 2;
    int cap_logits = s.cap_logits ? s.cap_logits : 16;
    while (cap_logits < n_logits) cap_logits *= 2;
    return replace_scratch(g, c, cap, cap_logits, err);
}

// Device-side view of one pass's inputs (pointers into s.in).
struct PassInputs {
    const int32_t *tokens, *positions, *kv_block, *logit_rows, *tables;
    const mt_attn_tile *tiles_dec, *tiles_pre;
    const mt_sample_row *sample;   // [logit rows], or null when every row takes its argmax
    const int32_t *targets;        // [logit rows] scored tokens (mt_batch.logit_targets), or null
    const int32_t *ids_offsets, *ids_list;   // mt_batch's listed token ids, or null
    const int32_t *adjust;         // the pass's logit changes (s.adj), or null when it has none
    int n_dec, n_pre;
};

// A decode step (every token the only one of its sequence in the pass, and wanting its logits) can
// run as a captured graph: each token is then attended as a lone decode tile, which gives the same
// bits as any other tiling. A pass of several tokens of one sequence, each wanting logits (a scored
// prompt's chunk), is not one: a decode tile copies its context's K/V before the dependency wait
// (they were written by earlier passes), so a graph slot would read positions that another slot of
// the same pass writes, before they are written. It runs as a prefill. The batch is laid out as
// check_runs requires, so a sequence with two tokens has two neighbouring slots.
bool pure_decode(const mt_batch *b) {
    if (b->n_logits != b->n_tokens) return false;
    for (int i = 0; i < b->n_tokens; i++)
        if (b->logit_rows[i] != i || (i > 0 && b->seq_ids[i] == b->seq_ids[i - 1])) return false;
    return true;
}

// A buffer with a pinned host mirror, grown by doubling from `first` elements to hold `need`; on
// failure both are freed and cap is 0.
template <class T>
int grow_mirrored(T *&dev, T *&host, size_t &cap, size_t need, size_t first, mt_err *err) {
    size_t want = cap ? cap : first;
    while (want < need) want *= 2;
    cudaFree(dev);
    cudaFreeHost(host);
    dev = host = nullptr;
    cap = 0;
    MT_CU(err, cudaMalloc((void **)&dev, want * sizeof(T)));
    MT_CU(err, cudaMallocHost((void **)&host, want * sizeof(T)));
    cap = want;
    return 0;
}

// Grows a buffer (device memory, or pinned host memory) to hold `need` elements, doubling from 1024;
// what it held is not kept. On failure it is freed and cap is 0.
template <class T>
int grow_buffer(T *&p, size_t &cap, size_t need, bool pinned, mt_err *err) {
    if (need <= cap) return 0;
    size_t want = cap ? cap : 1024;
    while (want < need) want *= 2;
    if (pinned) cudaFreeHost(p);
    else cudaFree(p);
    p = nullptr;
    cap = 0;
    if (pinned) MT_CU(err, cudaMallocHost((void **)&p, want * sizeof(T)));
    else MT_CU(err, cudaMalloc((void **)&p, want * sizeof(T)));
    cap = want;
    return 0;
}

// Room for n listed tokens' log-probabilities, on the device and in the pass's host copies `o`
// (launched outside the graphs, so none is cleared). The device's buffer moves once the work in
// flight is done with it.
int ensure_ids(GpuModel *g, HostOut &o, size_t n, mt_err *err) {
    GpuScratch &s = g->s;
    if (n > s.ids_cap) MT_CU(err, cudaStreamSynchronize(g->stream));
    return grow_buffer(s.ids_lp, s.ids_cap, n, false, err) || grow_buffer(o.ids_lp, o.ids_cap, n, true, err) ? -1 : 0;
}

// Room for `need` ints in a mirrored buffer the captured graphs read (batch inputs, logit changes):
// when it must move, the work in flight finishes and the graphs are cleared first.
int ensure_graph_input(GpuModel *g, int32_t *&dev, int32_t *&host, size_t &cap, size_t need, mt_err *err) {
    if (need <= cap) return 0;
    MT_CU(err, cudaStreamSynchronize(g->stream));
    mt_gpu_graphs_clear(g);
    return grow_mirrored(dev, host, cap, need, 4096, err);
}

// Uploads the batch's logit changes (their count, then the changes from word 4) for the pass's
// adjust launch; pi->adjust is null when there are none.
int upload_adjusts(GpuModel *g, const mt_batch *b, PassInputs *pi, mt_err *err) {
    pi->adjust = nullptr;
    if (b->n_adjusts <= 0) return 0;
    size_t words = 4 + (size_t)MT_LOGIT_ADJUST_WORDS * (size_t)b->n_adjusts;
    GpuScratch &s = g->s;
    if (ensure_graph_input(g, s.adj, s.h_adj, s.adj_cap, words, err)) return -1;
    memset(s.h_adj, 0, 4 * sizeof(int32_t));
    s.h_adj[0] = b->n_adjusts;
    memcpy(s.h_adj + 4, b->adjusts, (size_t)b->n_adjusts * sizeof(mt_logit_adjust));
    MT_CU(err, cudaMemcpyAsync(s.adj, s.h_adj, words * sizeof(int32_t), cudaMemcpyHostToDevice, g->stream));
    pi->adjust = s.adj;
    return 0;
}

// End of the run of consecutive tokens of one sequence (consecutive positions) starting at i.
int run_end(const mt_batch *b, int i) {
    int j = i + 1;
    while (j < b->n_tokens && b->seq_ids[j] == b->seq_ids[i] && b->positions[j] == b->positions[j - 1] + 1) j++;
    return j;
}

// Lays the batch out in pinned memory and uploads it in one copy: tokens, positions, the cache
// block of each token's position, logit rows, sampling, logit targets, table offsets, attention
// tiles (decode, then prefill), block tables. With B > 0 (a graph's pass) the layout is fixed for B
// slots: token i uses sequence slot i, slots past n are padding (cache block -1, empty tiles), and
// every token is a decode tile.
int upload_inputs(GpuModel *g, const mt_config *c, const mt_batch *b, int B, PassInputs *pi, mt_err *err) {
    GpuScratch &s = g->s;
    int n = b->n_tokens, G = c->num_attention_heads / c->num_key_value_heads;
    int slots = B > 0 ? B : n, dec_per_tok = (G + 15) / 16;
    size_t total_blocks = 0;
    for (int i = 0; i < b->num_seqs; i++) total_blocks += b->seqs[i] ? (size_t)b->seqs[i]->num_blocks : 0;
    size_t max_tiles = (size_t)slots * dec_per_tok + (size_t)slots;
    size_t n_toff = B > 0 ? (size_t)B : (size_t)b->num_seqs;
    size_t n_rows = B > 0 ? (size_t)B : (size_t)b->n_logits;
    // listed token ids (mt_batch.ids_offsets) go last: offsets, then the ids; only the launch after
    // the pass reads them, so where they land does not matter to a graph
    size_t n_ids = b->ids_offsets ? (size_t)b->n_logits + 1 + (size_t)b->ids_offsets[b->n_logits] : 0;
    size_t need = 3 * (size_t)slots + (2 + MT_SAMPLE_ROW_WORDS) * n_rows + n_toff + TILE_INTS * max_tiles + total_blocks +
                  n_ids;
    if (ensure_graph_input(g, s.in, s.h_in, s.in_cap, need, err)) return -1;
    int32_t *h = s.h_in;
    size_t at = 0;
    size_t o_tok = at; at += slots;
    size_t o_pos = at; at += slots;
    size_t o_kvb = at; at += slots;
    size_t o_rows = at; at += n_rows;
    size_t o_samp = at; at += MT_SAMPLE_ROW_WORDS * n_rows;   // mt_sample_row per logit row
    if (b->sample) {   // padded rows of a graph's pass take their argmax
        mt_sample_row *samp = (mt_sample_row *)(h + o_samp);
        for (size_t i = 0; i < n_rows; i++)
            samp[i] = i < (size_t)b->n_logits ? b->sample[i] : mt_sample_row{0.0f, 0, 1.0f, 0u, 0.0f};
    }
    // logit targets: read only by the log-probability launch after the pass (a graph's too), which
    // takes the pass's real rows; padded rows score their own token
    size_t o_targ = at; at += n_rows;
    if (b->logit_targets)
        for (size_t i = 0; i < n_rows; i++) h[o_targ + i] = i < (size_t)b->n_logits ? b->logit_targets[i] : -1;
    size_t o_toff = at; at += n_toff;
    size_t o_dec = at;
    mt_attn_tile *dec = (mt_attn_tile *)(h + at);
    int n_dec = 0, n_pre = 0;
    if (B > 0) {
        at += (size_t)B * dec_per_tok * TILE_INTS;
    }
    size_t o_pre = at;
    mt_attn_tile *pre = (mt_attn_tile *)(h + at);
    // block tables after the tiles (whose count a compact pass only knows once they are built)
    const size_t o_tab = at + (B > 0 ? 0 : TILE_INTS * max_tiles);
    size_t tab_at = o_tab;
    int32_t *toff = h + o_toff;
    if (B > 0) {
        for (int i = 0; i < B; i++) {
            bool real = i < n;
            h[o_tok + i] = real ? b->tokens[i] : 0;
            h[o_pos + i] = real ? b->positions[i] : 0;
            h[o_kvb + i] = -1;
            h[o_rows + i] = i;
            toff[i] = 0;
            if (real) {
                const mt_kv_seq *q = b->seqs[b->seq_ids[i]];
                toff[i] = (int32_t)(tab_at - o_tab);
                h[o_kvb + i] = q->blocks[b->positions[i] / 16];
                memcpy(h + tab_at, q->blocks, (size_t)q->num_blocks * sizeof(int32_t));
                tab_at += (size_t)q->num_blocks;
            }
            for (int h0 = 0; h0 < G; h0 += 16)
                dec[n_dec++] = {i, real ? 1 : 0, h0, G - h0 < 16 ? G - h0 : 16, real ? b->positions[i] : 0, toff[i]};
        }
    } else {
        memcpy(h + o_tok, b->tokens, (size_t)n * sizeof(int32_t));
        memcpy(h + o_pos, b->positions, (size_t)n * sizeof(int32_t));
        for (int i = 0; i < n; i++) h[o_kvb + i] = b->seqs[b->seq_ids[i]]->blocks[b->positions[i] / 16];
        memcpy(h + o_rows, b->logit_rows, (size_t)b->n_logits * sizeof(int32_t));
        for (int i = 0; i < b->num_seqs; i++) {
            toff[i] = (int32_t)(tab_at - o_tab);
            if (!b->seqs[i]) continue;
            memcpy(h + tab_at, b->seqs[i]->blocks, (size_t)b->seqs[i]->num_blocks * sizeof(int32_t));
            tab_at += (size_t)b->seqs[i]->num_blocks;
        }
        // Attention tiles over runs of consecutive tokens of one sequence: a lone token (decode)
        // gets tiles of <= 16 rows, a longer run (prefill chunk) tiles of <= 64 rows.
        mt_attn_tile *tiles = (mt_attn_tile *)(h + o_dec);
        for (int i = 0, j; i < n; i = j) {
            j = run_end(b, i);
            if (j - i == 1)
                for (int h0 = 0; h0 < G; h0 += 16)
                    tiles[n_dec++] = {i, 1, h0, G - h0 < 16 ? G - h0 : 16, b->positions[i], toff[b->seq_ids[i]]};
        }
        o_pre = o_dec + (size_t)n_dec * TILE_INTS;
        pre = (mt_attn_tile *)(h + o_pre);
        for (int i = 0, j; i < n; i = j) {
            j = run_end(b, i);
            if (j - i > 1 && G <= 64) {
                int per = 64 / G;
                for (int t = i; t < j; t += per) {
                    int nt = j - t < per ? j - t : per;
                    pre[n_pre++] = {t, nt, 0, G, b->positions[t + nt - 1], toff[b->seq_ids[t]]};
                }
            } else if (j - i > 1) {
                for (int t = i; t < j; t++)
                    for (int h0 = 0; h0 < G; h0 += 64)
                        pre[n_pre++] = {t, 1, h0, G - h0 < 64 ? G - h0 : 64, b->positions[t], toff[b->seq_ids[t]]};
            }
        }
    }
    size_t o_ids = tab_at;
    if (b->ids_offsets) {
        memcpy(h + o_ids, b->ids_offsets, ((size_t)b->n_logits + 1) * sizeof(int32_t));
        memcpy(h + o_ids + b->n_logits + 1, b->ids_list, (size_t)b->ids_offsets[b->n_logits] * sizeof(int32_t));
    }
    MT_CU(err, cudaMemcpyAsync(s.in, h, (tab_at + n_ids) * sizeof(int32_t), cudaMemcpyHostToDevice, g->stream));
    pi->tokens = s.in + o_tok;
    pi->positions = s.in + o_pos;
    pi->kv_block = s.in + o_kvb;
    pi->logit_rows = s.in + o_rows;
    pi->tables = s.in + o_tab;
    pi->tiles_dec = (const mt_attn_tile *)(s.in + o_dec);
    pi->tiles_pre = (const mt_attn_tile *)(s.in + o_pre);
    pi->sample = b->sample ? (const mt_sample_row *)(s.in + o_samp) : nullptr;
    pi->targets = b->logit_targets ? s.in + o_targ : nullptr;
    pi->ids_offsets = b->ids_offsets ? s.in + o_ids : nullptr;
    pi->ids_list = b->ids_offsets ? s.in + o_ids + b->n_logits + 1 : nullptr;
    pi->n_dec = n_dec;
    pi->n_pre = n_pre;
    return 0;
}

// Weights kept ahead in L2 (docs/CUDA.md, "Weights ahead in L2"): in a pass of at most L2_AHEAD_MAX
// tokens the expert gate/up product's blocks wait for the router, whose latency leaves the memory
// idle, so before their wait they fetch the start of the next dense product's weights (the next
// layer's q/k/v, or lm_head after the last layer) into the L2 set aside at attach, where that
// product finds them after the expert products have streamed theirs. At most g->l2_ahead bytes,
// none when it is 0.
struct L2Range {
    const void *p;
    size_t bytes;
};
L2Range l2_ahead_part(const GpuModel *g, const mt_dmat &W, int n) {
    if (n > L2_AHEAD_MAX || !g->l2_ahead || g->skip || !W.w) return {nullptr, 0};
    const size_t all = mt_dmat_elems(W.rows, W.K) * sizeof(bf16) & ~(size_t)255;
    return {W.w, all < g->l2_ahead ? all : g->l2_ahead};
}

// Whether the o product of a pass of n tokens fetches the rest of its items into L2 after its wait
// (mt_linear_args.l2_rest): passes of at most L2_AHEAD_MAX tokens; MOETRACE_CUDA_L2_REST=0 turns it
// off for comparisons.
bool o_rest(const GpuModel *g, int n) {
    static const bool on = !switched_off("MOETRACE_CUDA_L2_REST");
    return on && n <= L2_AHEAD_MAX && !g->skip;
}

// resid: MT_EPI_F32_ADD adds to it instead of to out; zero_after_wait: set to 0 once the launch
// before has completed; rest: the l2_rest of the small path (mt_linear_args).
void linear(GpuModel *g, const mt_dmat &W, const bf16 *X, int ldx, int n, void *out, int ldo, int epi,
            const float *resid = nullptr, int *zero_after_wait = nullptr, bool rest = false) {
    mt_linear_args a = mt_dense_args(W, X, ldx, n, out, ldo, epi, tile_rows_for(n));
    a.l2_rest = rest ? 1 : 0;
    a.weights_once = n <= SPLIT_MAX;
    a.resid = resid;
    a.zero_after_wait = zero_after_wait;
    if (n <= SMALL_DENSE) {
        mt_cuda_linear_small(&a, g->stream);
    } else if (n <= g->s.split_cap && W.rows_pad <= g->s.split_rows &&
               mt_cuda_linear_split_blocks(W.rows_pad, n) < g->sm_count) {
        a.partials = g->s.split_part;
        mt_cuda_linear_split(&a, g->stream);
    } else {
        mt_cuda_linear_large(&a, g->stream);
    }
}

// Expert products over the pairs sorted by expert. gather: X rows are tokens (read through the
// sort's src_rows); otherwise X rows are already the sorted positions.
void linear_grouped(GpuModel *g, const mt_dmat &W, size_t stride, const bf16 *X, int ldx, bool gather, int n, int k,
                    int E, void *out, int ldo, int epi, bool sort_early = false, L2Range keep = {}) {
    GpuScratch &s = g->s;
    mt_linear_args a = {};
    a.l2_keep = keep.p;
    a.l2_keep_bytes = keep.bytes;
    a.W = W;
    a.group_stride = stride;
    a.X = X;
    a.ldx = ldx;
    a.group_offsets = s.offsets;
    a.x_rows = gather ? n : n * k;
    a.src_rows = gather ? s.src_rows : nullptr;
    a.active = s.active;
    a.n_active = s.n_active;
    a.tile_offsets = s.tile_offsets;
    a.n_groups = E;
    a.out = out;
    a.ldo = ldo;
    a.epilogue = epi;
    a.tile_rows = tile_rows_for(n * k / E);   // as the sort counted its tiles
    a.weights_once = n * k <= E * 64;          // about one 64-row tile per expert
    if (n <= SMALL_BATCH) {
        a.sort_early = sort_early;
        a.max_work = n * k < E ? n * k : E;
        a.rows_max = n;   // a token picks an expert at most once
        mt_cuda_linear_small(&a, g->stream);
        return;
    }
    a.max_work = ceil_div(n * k, a.tile_rows) + E;
    if (gather && mt_cuda_wgmma_takes_grouped(W.K, a.tile_rows) && (size_t)n * k * W.K * sizeof(bf16) <= s.ye_bytes) {
        // the Hopper path reads X rows in sorted order: gather them into s.ye, which the down
        // product writes only after this product has read them
        bf16 *sorted = reinterpret_cast<bf16 *>(s.ye);
        mt_cuda_gather_rows(sorted, X, ldx, s.src_rows, n * k, W.K, g->stream);
        a.X = sorted;
        a.ldx = W.K;
        a.x_rows = n * k;
        a.src_rows = nullptr;
    }
    mt_cuda_linear_large(&a, g->stream);
}

// Whether the MoE block of a pass of n tokens starts with the one-launch router
// (mt_cuda_moe_router: the post-attention norm, the router product, routing and sort). Decode-sized
// passes; MOETRACE_CUDA_ONE_LAUNCH_ROUTER=0 turns it off for comparisons (same bits either way).
bool one_launch_router(const GpuModel *g, const mt_config *c, int n) {
    static const bool on = !switched_off("MOETRACE_CUDA_ONE_LAUNCH_ROUTER");
    return on && !(g->skip & (MT_SKIP_NORM | MT_SKIP_ROUTER | MT_SKIP_ROUTE_SORT)) &&
           mt_cuda_moe_router_takes(n, c->num_experts, c->top_k, c->hidden_size);
}

// The one-launch router's arguments (one_launch_router): the post-attention norm mlp_norm of s.h
// into s.xb, the router product into s.router, routing into ids and w, the sort into es.
mt_moe_router_args router_args(const GpuModel *g, const mt_config *c, const GpuLayer &L, const mt_expert_sort &es,
                               int32_t *ids, float *w, int n, const float *mlp_norm) {
    mt_moe_router_args ra = {};
    ra.h = g->s.h;
    ra.norm_w = mlp_norm;
    ra.eps = c->rms_norm_eps;
    ra.n = n;
    ra.H = c->hidden_size;
    ra.y = g->s.xb;
    ra.W = L.router;
    ra.logits = g->s.router;
    ra.ld = mt_round16(c->num_experts);
    ra.sort = es;
    ra.ids = ids;
    ra.weights = w;
    ra.E = c->num_experts;
    ra.k = c->top_k;
    ra.renorm = c->norm_topk_prob ? 1 : 0;
    return ra;
}

// Whether layer l's MoE combine is folded into layer l + 1's q/k/v product
// (mt_cuda_linear_small_combined): passes of one token; MOETRACE_CUDA_FOLD_COMBINE=0 turns it off
// for comparisons (same bits either way). Not in benchmarks that leave launches out.
bool fold_combine(const GpuModel *g, const mt_config *c, int l, int n) {
    static const bool on = !switched_off("MOETRACE_CUDA_FOLD_COMBINE");
    if (!on || g->skip || l + 1 >= c->num_hidden_layers || !g->layers[l].is_moe) return false;
    const int qkv_rows = c->num_attention_heads * c->head_dim + 2 * c->num_key_value_heads * c->head_dim;
    return n <= SMALL_DENSE && mt_cuda_linear_combined_takes(n, c->hidden_size, c->top_k, mt_round16(qkv_rows));
}

// The MoE block of layer L; next_norm (the next layer's input norm, or null) is applied to the
// updated residual by the combine's launch, into s.xb. mlp_norm: when set, s.xb does not hold the
// normed input yet and the one-launch router computes it (one_launch_router). fold: when set, the
// combine is not launched but described there, for the next layer's q/k/v product to do
// (fold_combine). keep: weights the gate/up product fetches into L2 ahead (l2_ahead_part).
void moe_block(GpuModel *g, const mt_config *c, const GpuLayer &L, int ml, int n, const float *next_norm,
               const float *mlp_norm, mt_combine_args *fold, L2Range keep) {
    GpuScratch &s = g->s;
    int H = c->hidden_size, E = c->num_experts, k = c->top_k, I = c->moe_intermediate_size;
    int Ep = mt_round16(E);
    int32_t *ids = s.cap_ids + (size_t)ml * n * k;
    float *w = s.cap_w + (size_t)ml * n * k;
    mt_expert_sort es = {s.offsets, s.src_rows, s.pair_pos, s.active, s.n_active, s.tile_offsets, s.counts, s.sort_chunks,
                         tile_rows_for(n * k / E)};
    prof_mark(g, PROF_ROUTER);
    if (mlp_norm) {
        const mt_moe_router_args ra = router_args(g, c, L, es, ids, w, n, mlp_norm);
        mt_cuda_moe_router(&ra, g->stream);
    } else {
        if (!(g->skip & MT_SKIP_ROUTER)) linear(g, L.router, s.xb, H, n, s.router, Ep, MT_EPI_F32);
        prof_mark(g, PROF_ROUTE_SORT);
        if (!(g->skip & MT_SKIP_ROUTE_SORT))
            mt_cuda_route_sort(&es, ids, w, s.router, Ep, n, E, k, c->norm_topk_prob ? 1 : 0, g->stream);
    }
    prof_mark(g, PROF_EXPERT_GATE_UP);
    if (!(g->skip & MT_SKIP_GATE_UP))
        linear_grouped(g, L.experts_gate_up, L.gate_up_stride, s.xb, H, true, n, k, E, s.act, I, MT_EPI_SWIGLU, false,
                       keep);
    prof_mark(g, PROF_EXPERT_DOWN);
    if (!(g->skip & MT_SKIP_DOWN)) {
        // the sort is two launches back, so each block copies its first item's weights before its
        // wait; not when the gate/up launch is left out (benchmarks), which leaves the sort one back
        const bool sort_early = !(g->skip & MT_SKIP_GATE_UP);
        linear_grouped(g, L.experts_down, L.down_stride, s.act, I, false, n, k, E, s.ye, H, MT_EPI_F32, sort_early);
    }
    const float *ys = nullptr, *sg = nullptr;
    if (L.has_shared) {
        prof_mark(g, PROF_SHARED);
        int SI = c->shared_expert_intermediate_size;
        linear(g, L.shared.gate_up, s.xb, H, n, s.sact, SI, MT_EPI_SWIGLU);
        linear(g, L.shared.down, s.sact, SI, n, s.ys, H, MT_EPI_F32);
        ys = s.ys;
        if (L.shared_gate.w) {
            linear(g, L.shared_gate, s.xb, H, n, s.sg, 16, MT_EPI_F32);
            sg = s.sg;
        }
    }
    if (ys && !sg) {
        // ungated shared expert: a gate of +inf makes sigmoid exactly 1
        mt_cuda_fill_f32(s.sg, (size_t)n * 16, INFINITY, g->stream);
        sg = s.sg;
    }
    if (fold) {   // mt_combine_args' fields in order
        *fold = {s.h, s.ye, s.pair_pos, w, ys, sg, 16, k, H, next_norm, c->rms_norm_eps, s.h_combined, s.combine_sums,
                 s.combine_ready};
        return;
    }
    prof_mark(g, PROF_COMBINE);
    if (!(g->skip & MT_SKIP_COMBINE))
        mt_cuda_moe_combine(s.h, s.ye, s.pair_pos, w, n, k, H, ys, sg, 16, next_norm ? s.xb : nullptr, next_norm,
                            c->rms_norm_eps, g->stream);
}

// The q/k prologue's arguments for layer l of a pass of n tokens: s.qkv's q and k normed and
// rotated (q into s.qb, k and v into the cache at each token's block and position).
mt_qk_prep_args qk_prep_args(const GpuModel *g, const mt_config *c, const GpuLayer &L, const mt_kv_cache *kv,
                             const PassInputs &pi, int l, int n) {
    mt_qk_prep_args qa = {};
    qa.qkv = g->s.qkv;
    qa.n = n;
    qa.n_heads = c->num_attention_heads;
    qa.n_kv_heads = c->num_key_value_heads;
    qa.head_dim = c->head_dim;
    qa.q_bias = L.q_bias;
    qa.k_bias = L.k_bias;
    qa.v_bias = L.v_bias;
    qa.q_norm = L.q_norm;
    qa.k_norm = L.k_norm;
    qa.qk_norm_full = c->qk_norm == MT_QK_NORM_FULL;
    qa.eps = c->rms_norm_eps;
    qa.inv_freq = g->inv_freq;
    qa.rope_scale = c->rope_attention_factor;
    qa.positions = pi.positions;
    qa.kv_block = pi.kv_block;
    qa.k_cache = (bf16 *)kv->dev_k;
    qa.v_cache = (bf16 *)kv->dev_v;
    qa.layer = l;
    qa.num_layers = c->num_hidden_layers;
    qa.q_out = g->s.qb;
    return qa;
}

// Attention's arguments for layer l, s.qb against the cache into s.att, over the pass's decode
// tiles (the caller sets the split attention's and then the prefill tiles).
mt_attention_args attention_args(const GpuModel *g, const mt_config *c, const mt_kv_cache *kv, const PassInputs &pi, int l) {
    mt_attention_args aa = {};
    aa.q = g->s.qb;
    aa.k_cache = (const bf16 *)kv->dev_k;
    aa.v_cache = (const bf16 *)kv->dev_v;
    aa.positions = pi.positions;
    aa.block_table = pi.tables;
    aa.layer = l;
    aa.num_layers = c->num_hidden_layers;
    aa.n_heads = c->num_attention_heads;
    aa.n_kv_heads = c->num_key_value_heads;
    aa.head_dim = c->head_dim;
    aa.sliding_window = c->sliding_window;
    aa.out = g->s.att;
    aa.tiles = pi.tiles_dec;
    aa.n_tiles = pi.n_dec;
    return aa;
}

// Scratch for the split attention of a decode pass; false when it cannot be had.
bool ensure_split(GpuModel *g, size_t floats) {
    if (floats <= g->split_floats) return true;
    cudaStreamSynchronize(g->stream);
    mt_gpu_graphs_clear(g);
    cudaFree(g->split);
    g->split = nullptr;
    g->split_floats = 0;
    if (cudaMalloc(&g->split, floats * sizeof(float)) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    g->split_floats = floats;
    return true;
}

// Every kernel of one pass over n token slots (n_logits rows of logits). split_tiles > 0: decode
// attention through the split kernels over that many KV tiles. Only stream operations, so the
// sequence can be captured into a graph.
void run_pass(GpuModel *g, const mt_config *c, mt_kv_cache *kv, const PassInputs &pi, int n, int n_logits,
              bool next_tokens, int split_tiles) {
    GpuScratch &s = g->s;
    cudaStream_t st = g->stream;
    const unsigned skip = g->skip;   // 0 but in benchmarks (mt_cuda_set_skip)
    int H = c->hidden_size, qd = c->num_attention_heads * c->head_dim, kvd = c->num_key_value_heads * c->head_dim;
    prof_mark(g, PROF_EMBED);
    mt_cuda_embed(s.h, g->embed, pi.tokens, s.next, n, H, st);
    bool normed = false;   // s.xb already holds this layer's normed input (the MoE combine did it)
    bool folded = false;   // the last layer's combine is this layer's q/k/v product's (fold_combine)
    mt_combine_args fold = {};
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const GpuLayer &L = g->layers[l];
        prof_mark(g, PROF_NORM);
        if (!normed && !folded && !(skip & MT_SKIP_NORM))
            mt_cuda_rmsnorm(s.xb, s.h, nullptr, L.attn_norm, n, H, c->rms_norm_eps, st);
        prof_mark(g, PROF_QKV);
        if (folded) {
            // the combine and this layer's input norm in the product; the residual in s.h_combined
            mt_linear_args a = mt_dense_args(L.qkv, nullptr, H, n, s.qkv, qd + 2 * kvd, MT_EPI_F32, tile_rows_for(n));
            a.weights_once = 1;
            a.combine = fold;
            mt_cuda_linear_small_combined(&a, st);
        } else if (!(skip & MT_SKIP_QKV)) {
            linear(g, L.qkv, s.xb, H, n, s.qkv, qd + 2 * kvd, MT_EPI_F32);
        }
        prof_mark(g, PROF_QK_PREP);
        const mt_qk_prep_args qa = qk_prep_args(g, c, L, kv, pi, l, n);
        if (!(skip & MT_SKIP_QK_PREP)) mt_cuda_qk_prep(&qa, st);
        prof_mark(g, PROF_ATTENTION);
        mt_attention_args aa = attention_args(g, c, kv, pi, l);
        if (split_tiles > 0) {
            aa.split_states = g->split;
            aa.split_max_tiles = split_tiles;
        }
        if (!(skip & MT_SKIP_ATTENTION)) mt_cuda_attention_decode(&aa, st);
        aa.split_states = nullptr;
        aa.tiles = pi.tiles_pre;
        aa.n_tiles = pi.n_pre;
        if (!(skip & MT_SKIP_ATTENTION)) mt_cuda_attention_prefill(&aa, st);
        prof_mark(g, PROF_O_PROJ);
        // after a folded combine: the residual from s.h_combined, and the combine's count reset
        if (!(skip & MT_SKIP_O))
            linear(g, L.o, s.att, qd, n, s.h, H, MT_EPI_F32_ADD, folded ? s.h_combined : nullptr,
                   folded ? s.combine_ready : nullptr, o_rest(g, n));
        const bool router_norms = L.is_moe && one_launch_router(g, c, n);
        prof_mark(g, PROF_NORM);
        if (!router_norms && !(skip & MT_SKIP_NORM)) mt_cuda_rmsnorm(s.xb, s.h, nullptr, L.mlp_norm, n, H, c->rms_norm_eps, st);
        folded = fold_combine(g, c, l, n);
        normed = L.is_moe && l + 1 < c->num_hidden_layers && !folded;
        if (L.is_moe) {
            moe_block(g, c, L, g->moe_index[l], n, l + 1 < c->num_hidden_layers ? g->layers[l + 1].attn_norm : nullptr,
                      router_norms ? L.mlp_norm : nullptr, folded ? &fold : nullptr,
                      l2_ahead_part(g, l + 1 < c->num_hidden_layers ? g->layers[l + 1].qkv : g->lm_head, n));
        } else {
            prof_mark(g, PROF_DENSE_MLP);
            int I = c->intermediate_size;
            linear(g, L.dense.gate_up, s.xb, H, n, s.act, I, MT_EPI_SWIGLU);
            linear(g, L.dense.down, s.act, I, n, s.h, H, MT_EPI_F32_ADD);
        }
    }
    prof_mark(g, PROF_LOGITS);
    if (n_logits > 0) {
        int Vp = mt_round16(c->vocab_size);
        mt_cuda_rmsnorm(s.xb, s.h, pi.logit_rows, g->final_norm, n_logits, H, c->rms_norm_eps, st);
        linear(g, g->lm_head, s.xb, H, n_logits, s.logits, Vp, MT_EPI_F32);
        if (next_tokens) {
            if (pi.adjust) mt_cuda_adjust_logits(s.logits, Vp, pi.adjust, ADJUST_BLOCKS, st);
            mt_cuda_argmax(s.next, s.logits, Vp, n_logits, c->vocab_size, s.argmax_scratch, st);
            if (pi.sample) mt_cuda_sample(s.next, s.logits, Vp, n_logits, c->vocab_size, pi.sample, st);
        }
    }
    prof_mark(g, -1);
}

int next_pow2(int x, int at_least) {
    int p = at_least;
    while (p < x) p *= 2;
    return p;
}

// Decode batch sizes with a graph of their own; a pass of n tokens runs in the first that holds it.
const int BUCKETS[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256};

int bucket_of(int n) {
    for (int b : BUCKETS)
        if (n <= b) return b;
    return 0;
}

}  // namespace

void mt_gpu_graphs_clear(GpuModel *g) {
    for (int i = 0; i < g->n_graphs; i++) cudaGraphExecDestroy(g->graphs[i].exec);
    g->n_graphs = 0;
}

extern "C" int mt_cuda_kv_init(mt_kv_cache *kv, const mt_model *m, mt_err *err) {
    (void)m;
    size_t per = (size_t)kv->num_blocks * kv->num_layers * MT_KV_BLOCK * kv->kv_dim * sizeof(bf16);
    kv->dev_k = kv->dev_v = nullptr;
    cudaError_t rc = cudaMalloc(&kv->dev_k, per);
    if (rc == cudaSuccess) rc = cudaMalloc(&kv->dev_v, per);
    if (rc != cudaSuccess) {
        mt_cuda_kv_free(kv);
        mt_cuda_fail(err, "cudaMalloc (KV cache)", rc);
        if (err) {   // appended: the message cannot be an argument of the format that rewrites it
            char more[96];
            snprintf(more, sizeof more, ": %d blocks need 2 x %.1f GiB", kv->num_blocks, (double)per / (1u << 30));
            strncat(err->msg, more, sizeof err->msg - strlen(err->msg) - 1);
        }
        return -1;
    }
    return 0;
}

extern "C" void mt_cuda_kv_free(mt_kv_cache *kv) {
    cudaFree(kv->dev_k);
    cudaFree(kv->dev_v);
    kv->dev_k = kv->dev_v = nullptr;
}

// The device's layout of a batch (upload_inputs): each sequence's tokens are one run of consecutive
// positions in consecutive slots, so a run of one token is its sequence's only token in the pass and
// can be attended as a decode tile. -1 (err set) for a batch that is not so laid out.
static int check_runs(const mt_batch *b, mt_err *err) {
    std::vector<int> last((size_t)b->num_seqs, -1);
    for (int i = 0; i < b->n_tokens; i++) {
        int &at = last[(size_t)b->seq_ids[i]];
        if (at >= 0 && (at != i - 1 || b->positions[i] != b->positions[i - 1] + 1))
            return mt_errf(err, "batch index %d: on the device a sequence's tokens must be consecutive positions in "
                                "consecutive batch slots (sequence %d)", i, b->seq_ids[i]);
        at = i;
    }
    return 0;
}

// An event made on first use (timing off: it only orders).
static int ensure_event(cudaEvent_t &ev, mt_err *err) {
    if (!ev) MT_CU(err, cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    return 0;
}

extern "C" int mt_cuda_forward_begin(const mt_model *m, mt_kv_cache *kv, const mt_passes *q, const mt_batch *b,
                                     float *logits, bool routing, mt_err *err) {
    GpuModel *g = (GpuModel *)m->device;
    const mt_config *c = &m->cfg;
    if (!kv->dev_k) return mt_errf(err, "the KV cache was not created for the device");
    if (g->inflight >= 2 || (g->inflight > 0 && g->owner != q))
        return mt_errf(err, "another caller's pass is in flight on this device (passes end in the order they began)");
    if (check_runs(b, err)) return -1;
    int n = b->n_tokens, V = c->vocab_size, Vp = mt_round16(V);
    cudaStream_t st = g->stream;
    if (ensure_event(g->inputs_copied, err) || ensure_event(g->pass[g->inflight].done, err)) return -1;
    // the pass in flight's inputs leave the pinned buffer before this pass's are written there
    if (g->inflight > 0) MT_CU(err, cudaEventSynchronize(g->inputs_copied));

    // Pure decode passes run as a captured graph of their bucket size (padded token slots).
    bool decode = pure_decode(b);
    int B = decode && !g->graphs_off && !g->prof.on && b->next_tokens ? bucket_of(n) : 0;
    int slots = B > 0 ? B : n, n_logits = B > 0 ? B : b->n_logits;
    if (ensure_scratch(g, c, slots, n_logits, err)) return -1;
    PassInputs pi;
    if (upload_inputs(g, c, b, B, &pi, err) || upload_adjusts(g, b, &pi, err)) return -1;
    MT_CU(err, cudaEventRecord(g->inputs_copied, st));

    // Decode attention at small batches: split over KV tiles so the GPU has work for every SM.
    int split_tiles = 0;
    if (pi.n_dec > 0 && pi.n_dec * c->num_key_value_heads < 256) {
        int max_pos = 0;
        for (int i = 0; i < n; i++) max_pos = b->positions[i] > max_pos ? b->positions[i] : max_pos;
        int tiles = next_pow2(max_pos / 32 + 1, 16);
        if (ensure_split(g, mt_cuda_attention_split_floats(pi.n_dec, c->num_key_value_heads, tiles, c->head_dim)))
            split_tiles = tiles;
    }
    bool next_tokens = b->next_tokens != nullptr, sampled = b->sample != nullptr, adjusted = pi.adjust != nullptr;
    if (B > 0) {
        GpuGraph *hit = nullptr;
        for (int i = 0; i < g->n_graphs; i++)
            if (g->graphs[i].B == B && g->graphs[i].split_tiles == split_tiles && g->graphs[i].kv_k == kv->dev_k &&
                g->graphs[i].kv_v == kv->dev_v && g->graphs[i].sampled == sampled && g->graphs[i].adjusted == adjusted)
                hit = &g->graphs[i];
        if (hit) {
            MT_CU(err, cudaGraphLaunch(hit->exec, st));
        } else {
            // first pass of this shape: run it directly, then capture the same launches
            run_pass(g, c, kv, pi, B, B, next_tokens, split_tiles);
            MT_CU_LAUNCHED(err);
            if (g->n_graphs < MT_MAX_GRAPHS) {
                cudaGraph_t graph;
                MT_CU(err, cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
                run_pass(g, c, kv, pi, B, B, next_tokens, split_tiles);
                MT_CU(err, cudaStreamEndCapture(st, &graph));
                GpuGraph &gg = g->graphs[g->n_graphs];
                MT_CU(err, cudaGraphInstantiate(&gg.exec, graph, 0));
                cudaGraphDestroy(graph);
                gg.B = B;
                gg.split_tiles = split_tiles;
                gg.kv_k = kv->dev_k;
                gg.kv_v = kv->dev_v;
                gg.sampled = sampled;
                gg.adjusted = adjusted;
                g->n_graphs++;
            }
        }
    } else {
        run_pass(g, c, kv, pi, n, b->n_logits, next_tokens, split_tiles);
    }
    MT_CU_LAUNCHED(err);
    GpuScratch &s = g->s;
    HostOut &o = s.out[g->next_out];
    if (b->n_logits > 0) {
        if (next_tokens) {
            // after the pass (outside its graph): the logits are still there. The scored tokens and
            // the top lists in one launch, from the same max and sum per row.
            size_t n_listed = b->ids_offsets ? (size_t)b->ids_offsets[b->n_logits] : 0;
            if (n_listed && ensure_ids(g, o, n_listed, err)) return -1;
            if (b->next_logprobs || b->top_n > 0 || n_listed) {
                mt_cuda_token_logprob(b->next_logprobs ? s.logprob : nullptr, s.next, pi.targets, s.logits, Vp,
                                      b->n_logits, V, pi.sample, b->top_n, s.top_ids, s.top_lps,
                                      n_listed ? pi.ids_offsets : nullptr, pi.ids_list, s.ids_lp, st);
                MT_CU_LAUNCHED(err);
            }
            if (n_listed)
                MT_CU(err, cudaMemcpyAsync(o.ids_lp, s.ids_lp, n_listed * sizeof(float), cudaMemcpyDeviceToHost, st));
            if (b->next_logprobs)
                MT_CU(err, cudaMemcpyAsync(o.logprob, s.logprob, (size_t)b->n_logits * sizeof(float),
                                           cudaMemcpyDeviceToHost, st));
            if (b->top_n > 0) {
                size_t listed = (size_t)b->n_logits * b->top_n;
                MT_CU(err, cudaMemcpyAsync(o.top_ids, s.top_ids, listed * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                           st));
                MT_CU(err, cudaMemcpyAsync(o.top_lps, s.top_lps, listed * sizeof(float), cudaMemcpyDeviceToHost,
                                           st));
            }
            MT_CU(err, cudaMemcpyAsync(o.next, s.next, (size_t)b->n_logits * sizeof(int32_t), cudaMemcpyDeviceToHost, st));
        } else {
            // the logits out, nothing more: log-probabilities, targets and top lists come only with
            // next_tokens (mt_batch; forward.c's validate refuses top_n without them), and the
            // caller holds every row's logits to compute them itself
            MT_CU(err, cudaMemcpy2DAsync(logits, (size_t)V * sizeof(float), s.logits, (size_t)Vp * sizeof(float),
                                         (size_t)V * sizeof(float), (size_t)b->n_logits, cudaMemcpyDeviceToHost, st));
        }
    }
    // routing of layer ml lives at cap_ids + ml * slots * k; only the first n rows are real
    size_t cap_n = (size_t)g->num_moe_layers * slots * c->top_k;
    if (routing && cap_n) {
        MT_CU(err, cudaMemcpyAsync(o.cap_ids, s.cap_ids, cap_n * sizeof(int32_t), cudaMemcpyDeviceToHost, st));
        MT_CU(err, cudaMemcpyAsync(o.cap_w, s.cap_w, cap_n * sizeof(float), cudaMemcpyDeviceToHost, st));
    }
    auto &ps = g->pass[g->inflight];
    MT_CU(err, cudaEventRecord(ps.done, st));
    ps.slots = slots;
    ps.out = g->next_out;
    g->next_out ^= 1;
    g->owner = q;
    g->inflight++;
    return 0;
}

extern "C" int mt_cuda_forward_end(const mt_model *m, const mt_batch *b, const mt_routing_sink *sink, mt_err *err) {
    GpuModel *g = (GpuModel *)m->device;
    const mt_config *c = &m->cfg;
    if (g->inflight == 0) return mt_errf(err, "no pass is in flight on the device");
    auto ps = g->pass[0];
    // the next pass moves to the front, with its event; this one's event goes behind it for reuse
    g->pass[0] = g->pass[1];
    g->pass[1] = ps;
    g->inflight--;
    cudaError_t rc = cudaEventSynchronize(ps.done);
    if (!b) return 0;
    if (rc != cudaSuccess) return mt_cuda_fail(err, "cudaEventSynchronize (end of a pass)", rc);
    if (g->inflight == 0) prof_collect(g);
    const HostOut &o = g->s.out[ps.out];
    int n = b->n_tokens, k = c->top_k, slots = ps.slots;
    bool next_tokens = b->next_tokens != nullptr;
    if (b->n_logits > 0 && next_tokens) memcpy(b->next_tokens, o.next, (size_t)b->n_logits * sizeof(int32_t));
    if (b->n_logits > 0 && next_tokens && b->next_logprobs)
        memcpy(b->next_logprobs, o.logprob, (size_t)b->n_logits * sizeof(float));
    if (b->n_logits > 0 && next_tokens && b->ids_offsets && b->ids_offsets[b->n_logits] > 0)
        memcpy(b->ids_logprobs, o.ids_lp, (size_t)b->ids_offsets[b->n_logits] * sizeof(float));
    if (b->n_logits > 0 && next_tokens && b->top_n > 0) {
        memcpy(b->top_ids, o.top_ids, (size_t)b->n_logits * b->top_n * sizeof(int32_t));
        memcpy(b->top_logprobs, o.top_lps, (size_t)b->n_logits * b->top_n * sizeof(float));
    }
    if (sink && sink->on_layer) {
        // Expert parallelism: each choice's replica by the CPU's rule (routing/placement.h), on the host
        // copy of the routing; the device computes with the logical experts, as the CPU does.
        int32_t *phys = b->placement ? (int32_t *)malloc((size_t)n * k * sizeof(int32_t)) : NULL;
        if (b->placement && !phys) return mt_errf(err, "out of memory for the physical slots of %d tokens", n);
        for (int l = 0; l < c->num_hidden_layers; l++) {
            int ml = g->moe_index[l];
            if (ml < 0) continue;
            const int32_t *ids = o.cap_ids + (size_t)ml * slots * k;
            if (phys) mt_placement_dispatch(b->placement, l, n, k, ids, b->tokens, b->positions, phys);
            mt_routing_event ev = {l, n, k, b->seq_ids, b->positions, b->tokens, b->request_ids, b->request_names,
                                   ids, o.cap_w + (size_t)ml * slots * k, phys, b->request_groups,
                                   b->recomputed};
            sink->on_layer(sink->ctx, &ev);
        }
        free(phys);
    }
    return 0;
}

extern "C" size_t mt_cuda_scratch_bytes(const mt_model *m) {
    const GpuModel *g = (const GpuModel *)m->device;
    return g && g->s.cap ? scratch_device_bytes(g, &m->cfg, g->s.cap, g->s.cap_logits) : 0;
}

extern "C" int mt_cuda_reserve(const mt_model *m, int max_tokens, int max_logit_rows, mt_err *err) {
    GpuModel *g = (GpuModel *)m->device;
    const mt_config *c = &m->cfg;
    if (!g) return mt_errf(err, "the model is not on a device");
    if (max_tokens < 1 || max_logit_rows < 1)
        return mt_errf(err, "a reservation needs at least one token and one row (%d, %d)", max_tokens, max_logit_rows);
    // a decode step runs in its bucket's graph, whose padded slots each take a row
    int padded = bucket_of(max_logit_rows < 256 ? max_logit_rows : 256);
    int cap = max_tokens > padded ? max_tokens : padded, cap_logits = max_logit_rows > padded ? max_logit_rows : padded;
    if (cap == g->s.cap && cap_logits == g->s.cap_logits) return 0;
    size_t need = scratch_device_bytes(g, c, cap, cap_logits), held = mt_cuda_scratch_bytes(m);
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);   // the scratch held now is freed first
    if (replace_scratch(g, c, cap, cap_logits, err) == 0) return 0;
    return mt_errf(err, "device memory: the pass scratch for %d tokens and %d rows of logits takes %.2f GiB, and %.2f GiB "
                        "were free (%.200s); lower --max-batch-tokens or --max-scored-tokens",
                   cap, cap_logits, need / 1073741824.0, (free_bytes + held) / 1073741824.0,
                   err->msg);
}

extern "C" double mt_cuda_memory_free(void) {
    size_t free_bytes = 0, total = 0;
    if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
        cudaGetLastError();
        return 0.0;
    }
    return (double)free_bytes;
}

extern "C" void mt_cuda_profile(const mt_model *m, bool on) {
    GpuModel *g = (GpuModel *)m->device;
    if (g) g->prof.on = on;
}

extern "C" void mt_cuda_profile_report(const mt_model *m, char *buf, size_t len) {
    GpuModel *g = (GpuModel *)m->device;
    size_t at = 0;
    buf[0] = '\0';
    if (!g) return;
    GpuProfile &p = g->prof;
    double total = 0;
    for (int i = 0; i < PROF_COUNT; i++) total += p.ms[i];
    at += snprintf(buf + at, len - at, "%ld passes, %.3f ms of device time per pass:", p.passes,
                   p.passes ? total / p.passes : 0.0);
    for (int i = 0; i < PROF_COUNT && at < len; i++)
        if (p.ms[i] > 0)
            at += snprintf(buf + at, len - at, " %s %.1f%%;", STAGE_NAMES[i], total > 0 ? 100.0 * p.ms[i] / total : 0.0);
    memset(p.ms, 0, sizeof p.ms);
    p.passes = 0;
}

extern "C" void mt_cuda_set_wgmma(int on) { mt_cuda_wgmma_set_enabled(on); }

extern "C" void mt_cuda_set_skip(const mt_model *m, unsigned mask) {
    GpuModel *g = (GpuModel *)m->device;
    if (!g || g->skip == mask) return;
    cudaStreamSynchronize(g->stream);
    mt_gpu_graphs_clear(g);   // the graphs hold the launches of the old mask
    g->skip = mask;
}

extern "C" void mt_cuda_profiler_range(bool on) {
    if (on) cudaProfilerStart();
    else cudaProfilerStop();
}
