/* CUDA kernels of the GPU backend: launchers over device pointers on one stream, used by the
 * engine's GPU forward pass (engine/forward_cuda.cu). CUDA C++ only (included from .cu files).
 *
 * Batch invariance is the contract every kernel here keeps: the value computed for one token never
 * depends on which other tokens share the launch, how many there are, or where in the batch the
 * token sits. So a sequence's logits and routing are bitwise the same solo or batched, and whether
 * its tokens went through the small-batch or the large-batch matrix path:
 *  - matrix products: each output is a chain of bf16 tensor-core MMAs (m16n8k16, fp32 accumulate)
 *    over 16-wide chunks of K in increasing order, cut into mt_k_slices(K) fixed slices whose
 *    partial sums are added in slice order; both paths (linear_small, linear_large) do exactly that;
 *  - attention: KV positions in tiles of 32; each tile gives its own softmax state per row, and a
 *    row's states are merged in tile order, whichever kernel computes them;
 *  - reductions (norms, softmax, argmax) happen within one token's row in a fixed order.
 *
 * Weights live in the "tiled" layout: a [rows, K] matrix (K % 16 == 0) padded to rows_pad =
 * roundup(rows, 16) rows and stored as 16x16 tiles, tile (rt, kc) at element ((rt*(K/16)+kc)*256),
 * each tile as four 8x8 core matrices (rows 0-7 / 8-15 x k 0-7, then the same for k 8-15), each
 * 8 rows of 16 contiguous bytes (mt_tiled_offset). A warp loads a tile's m16n8k16 A-fragment from
 * shared memory with one ldmatrix.x4 (lane l at byte 16 l); wgmma reads the same core matrices
 * straight from shared memory. Gate/up pairs are interleaved per tile (rows 0-7 gate, 8-15 up of
 * the same 8 intermediate features) so SwiGLU runs in the product's epilogue. */
#ifndef MT_KERNELS_CUDA_KERNELS_H
#define MT_KERNELS_CUDA_KERNELS_H

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/sample.h"

typedef __nv_bfloat16 bf16;

/* ---- tiled weights ---------------------------------------------------------------------------- */

typedef struct mt_dmat {
    const bf16 *w;     /* tiled, [rows_pad/16][K/16][256] */
    int rows, rows_pad, K;
} mt_dmat;

static inline __host__ __device__ int mt_round16(int x) { return (x + 15) / 16 * 16; }
static inline size_t mt_dmat_elems(int rows, int K) { return (size_t)mt_round16(rows) * (size_t)K; }
/* Element (row, k) of a [rows, K] matrix in the tiled layout: tile (row/16, k/16), core matrix
 * (row%16 >= 8)*2 + (k%16 >= 8), its row row%8, column k%8. */
static inline __host__ __device__ size_t mt_tiled_offset(int row, int k, int K) {
    int r = row & 15, kk = k & 15;
    return ((size_t)(row >> 4) * (K / 16) + (k >> 4)) * 256 + ((r >= 8) * 2 + (kk >= 8)) * 64 + (r & 7) * 8 + (kk & 7);
}
/* Number of fixed K slices of a product with inner dimension K; slice s covers the 16-wide chunks
 * [s*C/S, (s+1)*C/S) with C = K/16. */
static inline __host__ __device__ int mt_k_slices(int K) { return K / 16 < 8 ? K / 16 : 8; }

/* How source rows map onto rows of a tiled matrix. */
enum mt_tile_rows {
    MT_ROWS_DIRECT = 0,   /* source row i -> row i */
    MT_ROWS_GATE,         /* gate row i  -> row (i/8)*16 + i%8 */
    MT_ROWS_UP,           /* up row i    -> row (i/8)*16 + 8 + i%8 */
};
/* Converts n_rows row-major source rows (dtype src_dtype: 0 f32, 1 f16, 2 bf16, as mt_dtype) of
 * length K, already on the device, into tiled dst rows as `mode` says; they are the source rows
 * first_row .. first_row + n_rows - 1 of the whole matrix. */
void mt_cuda_tile_rows(bf16 *dst, int K, const void *src, int src_dtype, int n_rows, int first_row, int mode,
                       cudaStream_t st);
/* Fills n values of a tiled matrix (or any bf16 array) with uniform values in [-scale, scale)
 * derived from seed (deterministic). */
void mt_cuda_fill_random(bf16 *dst, size_t n, float scale, uint64_t seed, cudaStream_t st);
/* Row-major conversions to bf16 / f32 (embedding table, small vectors). */
void mt_cuda_convert_bf16(bf16 *dst, const void *src, int src_dtype, size_t n, cudaStream_t st);
void mt_cuda_convert_f32(float *dst, const void *src, int src_dtype, size_t n, cudaStream_t st);
void mt_cuda_fill_f32(float *dst, size_t n, float value, cudaStream_t st);

/* ---- matrix products ------------------------------------------------------------------------- */

enum mt_epilogue {
    MT_EPI_F32 = 0,       /* out_f32[row][col] = acc */
    MT_EPI_F32_ADD,       /* out_f32[row][col] += acc (residual stream) */
    MT_EPI_BF16,          /* out_bf16[row][col] = bf16(acc) */
    MT_EPI_SWIGLU,        /* out_bf16[row][j] = bf16(silu(gate_j) * up_j), j over rows/2 */
};

/* The previous layer's MoE combine, folded into a dense small-path product that takes its result
 * as X (mt_cuda_linear_small_combined): h_out = h + the combine of mt_cuda_moe_combine, and X =
 * RMSNorm(h_out) * norm_w, computed inside the product with that launch's arithmetic. */
typedef struct mt_combine_args {
    const float *h;                 /* [n, H] the residual before the combine */
    const float *ye;                /* expert output rows, indexed by pair_pos */
    const int32_t *pair_pos;        /* [n, k] */
    const float *w;                 /* [n, k] routing weights */
    const float *ys, *sg;           /* shared expert [n, H] and its gate (stride ld_sg), or NULL */
    int ld_sg, k, H;
    const float *norm_w;            /* [H] the norm X takes */
    float eps;
    float *h_out;                   /* [n, H] the combined residual (not h: other blocks still read it) */
    float *sums;                    /* [16] scratch: partial sums of squares */
    int *ready;                     /* 0 at the launch (zero_after_wait of a later product resets it) */
} mt_combine_args;

/* Y = X . W^T for rows of X. Dense: rows 0..n-1 of X (row stride ldx) give output rows 0..n-1.
 * Grouped (experts): group g uses W + g*group_stride elements and owns sorted positions
 * [group_offsets[g], group_offsets[g+1]); position p reads X row src_rows[p] (X row p when
 * src_rows is NULL) and writes output row p. Output row stride ldo (in elements of the output
 * type). */
typedef struct mt_linear_args {
    mt_dmat W;
    size_t group_stride;            /* elements between consecutive experts' tiled matrices */
    const bf16 *X;
    int ldx;
    int x_rows;                     /* rows X holds (host value; the wgmma path's tensor map), 0: unknown */
    int n;                          /* dense: number of rows (host value) */
    const int32_t *group_offsets;   /* grouped: [E + 1] on device, or NULL for dense */
    const int32_t *src_rows;        /* grouped: [positions] on device */
    const int32_t *active;          /* grouped, small path: [3E] active groups in id order, then their
                                       first positions, then their rows (as the sort writes them) */
    const int32_t *n_active;        /* grouped, small path: device count of active groups */
    const int32_t *tile_offsets;    /* grouped, large path: [E + 1] prefix of tile_rows-row tiles per group */
    int tile_rows;                  /* large path: X rows per block, 64 or 128 (the sort's tile size) */
    int n_groups;                   /* grouped: E */
    int max_work;                   /* grouped: upper bound of work items (grid size) */
    int rows_max;                   /* small path: no group (or dense call) has more X rows (host value; 0: unknown) */
    float *partials;                /* split path: [mt_k_slices(K)][n][W.rows_pad] floats of scratch */
    int weights_once;               /* 1: each weight is read by one block (decode): bulk copies, L2 evicts them first */
    int sort_early;                 /* grouped, small path: the sort was written two or more launches back, so
                                       each block copies its first item's first stages of weights before the
                                       dependency wait (a sort written later could change the item under them) */
    void *out;
    int ldo;
    int epilogue;
    const float *resid;             /* MT_EPI_F32_ADD: out = resid + acc (same layout as out) instead of
                                       out += acc; NULL: out itself */
    mt_combine_args combine;        /* mt_cuda_linear_small_combined only */
    int *zero_after_wait;           /* small path: set to 0 by block 0 after its wait (a combined product's
                                       `ready`, three launches back, for the next one), or NULL */
    const void *l2_keep;            /* small path: weights of a later launch that the blocks fetch into L2
                                       before their wait, to stay there (evict_last, in the L2 set aside by
                                       mt_cuda_l2_keep_setup), each block an even share; or NULL */
    size_t l2_keep_bytes;           /* bytes of l2_keep, a multiple of 256 */
    int l2_rest;                    /* small path, dense: after the wait each warp fetches the rest of its
                                       first item's K slice, past what its ring holds, into L2 */
} mt_linear_args;

/* Sets aside up to `want` bytes of the current device's L2 for persisting lines
 * (mt_linear_args.l2_keep), at most what the device allows; returns the bytes set aside (0 where it
 * cannot, as on devices without persisting L2 or under MIG). */
size_t mt_cuda_l2_keep_setup(size_t want);

/* A dense product's arguments: out rows 0..n-1 (stride ldo) = X rows (stride ldx) . W^T with the
 * epilogue, in large-path tiles of tile_rows X rows; everything else zero. */
static inline mt_linear_args mt_dense_args(mt_dmat W, const bf16 *X, int ldx, int n, void *out, int ldo, int epilogue,
                                           int tile_rows) {
    mt_linear_args a = {};
    a.W = W;
    a.X = X;
    a.ldx = ldx;
    a.x_rows = n;
    a.n = n;
    a.rows_max = n;
    a.out = out;
    a.ldo = ldo;
    a.epilogue = epilogue;
    a.tile_rows = tile_rows;
    return a;
}

/* Small batches (every group or dense call with at most 64 rows per work item): weights streamed
 * once by bulk copies, K split over 8 warps. Grouped calls need per-group counts <= 64. With
 * rows_max <= 8 it works in passes of 8 rows (larger weight copies); the bits are the same. */
void mt_cuda_linear_small(const mt_linear_args *a, cudaStream_t st);
/* The direct path for products of at most 8 X rows a group (or dense call of at most 8 rows):
 * each warp loads its K slice's weight fragments straight into registers, and the warp that
 * completes an item adds the slices; the small path's bits (linear_direct.cu). mt_cuda_linear_small
 * calls it first; it returns 0, launching nothing, when it is off or does not take the product. It
 * takes grouped products without SwiGLU (the expert down product of decode batches up to 8), where
 * it measured faster. MOETRACE_CUDA_DIRECT=0 turns it off, 2 or 3 forces one of its two shapes;
 * mt_cuda_linear_direct_set(mode) overrides the variable (-1: back to it) and, with mode > 0, makes
 * it take every product it can (tests). */
int mt_cuda_linear_direct(const mt_linear_args *a, cudaStream_t st);
void mt_cuda_linear_direct_set(int mode);
/* The same product with its X row computed in its prologue: the previous layer's MoE combine and
 * the norm (a.combine; a.X unused), one launch instead of two. Its first 8 blocks each combine an
 * eighth of the row into combine.h_out and count themselves in combine.ready; every block waits
 * for the count (all blocks are resident at once: one wave) and normalises the row itself. The
 * bits of out and h_out are those of mt_cuda_moe_combine (with y) followed by
 * mt_cuda_linear_small. Dense products only; whether it takes one: mt_cuda_linear_combined_takes. */
void mt_cuda_linear_small_combined(const mt_linear_args *a, cudaStream_t st);
/* Whether mt_cuda_linear_small_combined takes n rows of width H (= the product's K), top-k of k,
 * against a matrix of rows_pad rows: one row, the norm's width a multiple of 256 threads, k <= 8,
 * one wave of blocks. */
int mt_cuda_linear_combined_takes(int n, int H, int k, int rows_pad);
/* The product kernels' static shared memory keeps their dynamic shared memory, where bulk copies
 * land, on 32-byte boundaries (mma.cuh): NULL, or the first kernel that breaks it. For tests. */
const char *mt_cuda_linear_layout_check(void);

/* Large batches: 128 x tile_rows tiles staged through shared memory (3 stages; weights by bulk
 * copies when weights_once, else cp.async). */
void mt_cuda_linear_large(const mt_linear_args *a, cudaStream_t st);
/* Dense products too narrow to fill the device with large-path tiles (decode batches of tens to
 * hundreds of rows against a few thousand weight rows): the large path's 128 x 64 tiles with each
 * K slice in its own block, writing slice sums to a.partials; a second kernel adds the slices in
 * order and applies the epilogue, so the bits are those of the other paths. */
void mt_cuda_linear_split(const mt_linear_args *a, cudaStream_t st);
/* Blocks the large path's 128 x 64 tiles give a dense product (before any split). */
int mt_cuda_linear_split_blocks(int rows_pad, int n);
/* The large path on Hopper (linear_wgmma.cu, sm_90a): wgmma steps fed by the copy engine, the same
 * bits as the mma.sync large kernel. Supported on compute capability 9.0 devices; used by
 * mt_cuda_linear_large when usable (on unless MOETRACE_CUDA_WGMMA=0, or set_enabled(1 / 0);
 * set_enabled(-1) goes back to the variable). mt_cuda_linear_wgmma returns 0, launching nothing,
 * for products it does not take: 64-row tiles, K other than 768, 1024, 2048 or 4096 (8 slices of
 * whole stages), gathered X rows (src_rows: gather them first), X the copy engine cannot read
 * (x_rows 0, row stride not a multiple of 8, X not 16-byte aligned). */
int mt_cuda_wgmma_supported(void);
int mt_cuda_wgmma_usable(void);
void mt_cuda_wgmma_set_enabled(int on);
int mt_cuda_linear_wgmma(const mt_linear_args *a, cudaStream_t st);
/* Whether the Hopper path would take a grouped product of inner dimension K in tile_rows-row tiles
 * once its X rows are contiguous: the caller then gathers them in sorted order first
 * (mt_cuda_gather_rows). */
int mt_cuda_wgmma_takes_grouped(int K, int tile_rows);

/* ---- element-wise and per-token kernels -------------------------------------------------------- */

/* h[i] = embed[tokens[i]] (bf16 row-major table [V, H]); a token t < 0 is picked[-1 - t] (the previous
 * pass's pick of row -1 - t: engine/forward.h's MT_TOKEN_OF_ROW). */
void mt_cuda_embed(float *h, const bf16 *embed, const int32_t *tokens, const int32_t *picked, int n, int H,
                   cudaStream_t st);
/* dst row p (width elements, rows packed) = src row rows[p] (row stride ld_src), p < n; width and
 * ld_src multiples of 8, both arrays 16-byte aligned. */
void mt_cuda_gather_rows(bf16 *dst, const bf16 *src, int ld_src, const int32_t *rows, int n, int width, cudaStream_t st);
/* y[i] = bf16(x[rows ? rows[i] : i] / rms * w) over n rows of H. */
void mt_cuda_rmsnorm(bf16 *y, const float *x, const int32_t *rows, const float *w, int n, int H, float eps,
                     cudaStream_t st);

/* Per token: biases, q/k norm, RoPE at its position, q -> bf16 [n, qd], k/v -> the paged cache.
 * Positions, cache blocks, biases, norm weights and inv_freq are read before the dependency wait
 * (launch.cuh): the pass's inputs and weights, which no launch of the pass writes. */
typedef struct mt_qk_prep_args {
    const float *qkv;                 /* [n, qd + 2*kvd] */
    int n, n_heads, n_kv_heads, head_dim;
    const float *q_bias, *k_bias, *v_bias;  /* may be NULL */
    const float *q_norm, *k_norm;     /* may be NULL */
    int qk_norm_full;                 /* 1: norm over the whole projection, 0: per head */
    float eps;
    const float *inv_freq;            /* [head_dim/2] RoPE inverse frequencies (device) */
    float rope_scale;                 /* cos and sin scaled by it (yarn's attention factor; 1 otherwise) */
    const int32_t *positions;         /* [n] */
    const int32_t *kv_block;          /* [n] cache block of each token's position (its sequence's table
                                         entry pos / 16), -1 for a padding slot (nothing cached) */
    bf16 *k_cache, *v_cache;          /* [blocks, layers, 16, kvd] */
    int layer, num_layers;
    bf16 *q_out;                      /* [n, qd] */
} mt_qk_prep_args;
void mt_cuda_qk_prep(const mt_qk_prep_args *a, cudaStream_t st);

/* A tile of attention rows: n_tok consecutive batch tokens of one sequence (consecutive positions)
 * x n_heads query heads (starting at head0 within the kv head's group); n_tok*n_heads <= 16 (decode
 * kernel) or <= 64 (prefill kernel). max_pos: the position of its last token; table_off: where its
 * sequence's block table starts in block_table (both known to the host, so the kernels' K/V
 * addresses wait on one lookup, not four). */
typedef struct mt_attn_tile {
    int32_t first_token, n_tok, head0, n_heads, max_pos, table_off;
} mt_attn_tile;

typedef struct mt_attention_args {
    const bf16 *q;                    /* [n, n_heads*hd] */
    const bf16 *k_cache, *v_cache;
    const int32_t *positions, *block_table;   /* tiles give each one's sequence's table offset */
    int layer, num_layers, n_heads, n_kv_heads, head_dim, sliding_window;
    const mt_attn_tile *tiles;        /* device; tiles with n_tok 0 are skipped (graph padding) */
    int n_tiles;
    bf16 *out;                        /* [n, n_heads*hd] */
    float *split_states;              /* decode: split scratch, or NULL */
    int split_max_tiles;              /* KV tiles the split kernels cover (> every tile's max_pos/32) */
} mt_attention_args;
/* Tiles of at most 16 rows. With split_states set (scratch of mt_cuda_attention_split_floats
 * floats), one warp per (tile, KV tile) and a merge kernel, or up to 32 KV tiles one cluster launch
 * that merges without the scratch (mt_cuda_attention_split_one_launch): the GPU stays busy at small
 * batches; otherwise 4 warps per tile compute KV tiles side by side and merge them in order. */
void mt_cuda_attention_decode(const mt_attention_args *a, cudaStream_t st);
/* Tiles of at most 64 rows: 4 warps of 16 rows each sharing the KV tiles. */
void mt_cuda_attention_prefill(const mt_attention_args *a, cudaStream_t st);
/* Decode split attention over at most 32 KV tiles (split_max_tiles <= 32) as one cluster launch
 * (the states merged through distributed shared memory) instead of a split and a merge launch;
 * the same bits. on: 1 on, 0 off, -1 back to MOETRACE_CUDA_SPLIT_ONE_LAUNCH (on unless "0"). */
void mt_cuda_attention_split_one_launch(int on);
/* How that launch sends a row's states to the block that merges it: 1 one bulk copy (the default),
 * 0 remote stores of 8 bytes (for comparisons; the same bits), -1 back to MOETRACE_CUDA_SPLIT_BULK
 * (bulk copies unless "0"). */
void mt_cuda_attention_split_bulk(int on);
size_t mt_cuda_attention_split_floats(int n_tiles, int n_kv_heads, int max_tiles, int head_dim);
/* Head dims the attention kernels are built for. */
int mt_cuda_attention_supports(int head_dim);

/* ---- MoE routing ------------------------------------------------------------------------------ */

/* Softmax over E router logits (row stride ld), top-k in router order (ties to the lower index),
 * optional renormalisation: ids/weights [n, k]. */
void mt_cuda_route(int32_t *ids, float *weights, const float *logits, int ld, int n, int E, int k, int renorm,
                   cudaStream_t st);

/* Stable counting sort of the n*k (token, slot) pairs by expert. Outputs: offsets [E+1],
 * src_rows [n*k] (token of each sorted position), pair_pos [n*k] (sorted position of pair t*k+j),
 * active [3E] + n_active (experts with tokens, in id order; then each one's first sorted position;
 * then its pairs), tile_offsets [E+1] (tiles of tile_rows).
 * counts: E ints of scratch; chunks: ceil(n*k/1024)*E ints of scratch. */
typedef struct mt_expert_sort {
    int32_t *offsets, *src_rows, *pair_pos, *active, *n_active, *tile_offsets, *counts, *chunks;
    int tile_rows;   /* 64 or 128, as the large product path will use */
} mt_expert_sort;
void mt_cuda_expert_sort(const mt_expert_sort *s, const int32_t *ids, int n, int k, int E, cudaStream_t st);

/* Both of the above; one launch for decode-sized passes (n <= 32). */
void mt_cuda_route_sort(const mt_expert_sort *s, int32_t *ids, float *weights, const float *logits, int ld, int n,
                        int E, int k, int renorm, cudaStream_t st);

/* The MoE router of a decode-sized pass in one launch (one cluster of blocks, a 16-row tile of the
 * router each): y = RMSNorm(h) * norm_w, logits = y . router^T, then mt_cuda_route_sort's routing
 * and sort. Each step runs the code (or the arithmetic, for the product: the small path's slices
 * and chunk order) of the launch it replaces, so every output has the same bits as
 * mt_cuda_rmsnorm + mt_cuda_linear_small + mt_cuda_route_sort. */
typedef struct mt_moe_router_args {
    const float *h;             /* [n, H] residual */
    const float *norm_w;        /* [H] the post-attention norm */
    float eps;
    int n, H;
    bf16 *y;                    /* [n, H] normed rows (the expert products' input) */
    mt_dmat W;                  /* router, [E, H] tiled */
    float *logits;              /* [n, ld] */
    int ld;
    mt_expert_sort sort;
    int32_t *ids;               /* [n, k] */
    float *weights;             /* [n, k] */
    int E, k, renorm;
} mt_moe_router_args;
/* Whether mt_cuda_moe_router takes a pass of n tokens, top-k of E (n <= 8, E <= 128, H <= 4096). */
int mt_cuda_moe_router_takes(int n, int E, int k, int H);
void mt_cuda_moe_router(const mt_moe_router_args *a, cudaStream_t st);

/* h[t] += sum_j w[t,j] * ye[pair_pos[t*k+j]] (+ sigmoid(sg[t*ld_sg]) * ys[t] when ys); then, when y
 * is set, y[t] = RMSNorm(h[t]) * norm_w with exactly mt_cuda_rmsnorm's arithmetic (the next layer's
 * input norm in the same launch). */
void mt_cuda_moe_combine(float *h, const float *ye, const int32_t *pair_pos, const float *w, int n, int k, int H,
                         const float *ys, const float *sg, int ld_sg, bf16 *y, const float *norm_w, float eps,
                         cudaStream_t st);

/* out[i] = argmax of row i of logits [n, ld] over V columns, ties to the lower index. scratch:
 * 2 * mt_cuda_argmax_scratch(n, V) floats. */
size_t mt_cuda_argmax_scratch(int n, int V);
void mt_cuda_argmax(int32_t *out, const float *logits, int ld, int n, int V, float *scratch, cudaStream_t st);
/* The pass's logit changes (mt_logit_adjust, kernels/sample.h) made to logits [rows, ld] in place,
 * bit for bit as mt_logit_adjusted (a NaN stays NaN, with the device's payload): list[0] is their
 * count (read on the device, so a captured graph takes any count), the changes start at list + 4
 * (MT_LOGIT_ADJUST_WORDS words each), at most one per (row, token). A grid of `blocks` blocks of 256
 * threads strides over them. */
void mt_cuda_adjust_logits(float *logits, int ld, const int32_t *list, int blocks, cudaStream_t st);
/* Rows whose spec samples (temperature > 0): tokens[i] = mt_sample_pick(&rows[i], row i of logits)
 * (kernels/sample.h), one block per row; other rows keep what tokens[i] holds (their argmax). */
void mt_cuda_sample(int32_t *tokens, const float *logits, int ld, int n, int V, const mt_sample_row *rows,
                    cudaStream_t st);
/* Row i's scored token is targets[i] when targets and targets[i] >= 0, else tokens[i]:
 * out[i] = mt_token_logprob(rows ? &rows[i] : NULL, row i of logits, V, that token) (kernels/sample.h),
 * summed in float; out may be NULL (only the top lists wanted; tokens and targets are then unread).
 * With k > 0 (k <= MT_TOP_LOGPROBS_MAX), also row i's k most likely tokens as mt_top_logprobs lists
 * them into top_ids[i*k .. i*k+k-1] and top_lps (ids by decreasing logit, ties to the lower id, NaN
 * never listed, places past the listable ones -1 and NaN), computed from the same max and sum as
 * out[i], so a listed token's value equals out's value for that token bit for bit (in this launch or
 * in one with k = 0). With ids_off (NULL: none), also the log-probabilities of row i's listed tokens
 * ids_list[ids_off[i] .. ids_off[i + 1]) into ids_out at the same places, the same bits as out's for
 * those tokens. One block per row, so a row's values do not depend on the batch. logits 16-byte
 * aligned, ld a multiple of 4. */
void mt_cuda_token_logprob(float *out, const int32_t *tokens, const int32_t *targets, const float *logits, int ld,
                           int n, int V, const mt_sample_row *rows, int k, int32_t *top_ids, float *top_lps,
                           const int32_t *ids_off, const int32_t *ids_list, float *ids_out, cudaStream_t st);

#endif
