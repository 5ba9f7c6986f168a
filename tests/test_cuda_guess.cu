// Experts guessed ahead of the router (docs/CUDA.md, "Experts guessed ahead"), piece by piece on the
// device: the guess rows made from a router and two norms, the q/k prologue's pick of the top-k of
// their logits, and the gate/up product of one token given right, wrong, partly right, repeated and
// out-of-range guesses, whose outputs must be the bits of the product without a guess every time.
#include <math.h>
#include <string.h>

#include <algorithm>

#include "cuda_test_util.cuh"

static int failures = 0;
static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static float frand() {   // uniform [-1, 1)
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / 16777216.0) * 2.0f - 1.0f;
}

static void result(const char *what, bool ok) {
    printf("  %-70s %s\n", what, ok ? "ok" : "FAIL");
    if (!ok) failures++;
}

// Row-major [rows, K] floats (bf16 values) tiled on the device; gate_up: the rows are the gate's
// rows then the up's, interleaved per tile as the engine stores them.
static bf16 *tiled(const std::vector<float> &w, int rows, int K, bool gate_up) {
    bf16 *d;
    const size_t elems = mt_dmat_elems(rows, K);
    CK(cudaMalloc(&d, elems * sizeof(bf16)));
    CK(cudaMemset(d, 0, elems * sizeof(bf16)));
    float *src = to_dev(w);
    if (!gate_up) {
        mt_cuda_tile_rows(d, K, src, 0, rows, 0, MT_ROWS_DIRECT, 0);
    } else {
        mt_cuda_tile_rows(d, K, src, 0, rows / 2, 0, MT_ROWS_GATE, 0);
        mt_cuda_tile_rows(d, K, src + (size_t)(rows / 2) * K, 0, rows / 2, 0, MT_ROWS_UP, 0);
    }
    CK(cudaDeviceSynchronize());
    cudaFree(src);
    return d;
}

// ---- the guess rows ---------------------------------------------------------------------------

// mt_cuda_guess_rows against the same scaling done on the host and tiled: the same bits, and zero
// in the columns whose input norm weight is zero.
static void check_guess_rows(int E, int K) {
    std::vector<float> w((size_t)E * K), post(K), in(K), want((size_t)E * K);
    for (auto &v : w) v = __bfloat162float(__float2bfloat16(frand()));
    for (int c = 0; c < K; c++) {
        post[c] = 1.0f + 0.5f * frand();
        in[c] = c % 37 == 5 ? 0.0f : 1.0f + 0.5f * frand();
    }
    for (int r = 0; r < E; r++)
        for (int c = 0; c < K; c++) {
            const float x = w[(size_t)r * K + c];
            want[(size_t)r * K + c] = in[c] != 0.0f ? __bfloat162float(__float2bfloat16(x * (post[c] / in[c]))) : 0.0f;
        }
    bf16 *dw = tiled(w, E, K, false), *dwant = tiled(want, E, K, false), *dgot;
    const size_t elems = mt_dmat_elems(E, K);
    CK(cudaMalloc(&dgot, elems * sizeof(bf16)));
    float *dpost = to_dev(post), *din = to_dev(in);
    const mt_dmat router = {dw, E, mt_round16(E), K};
    mt_cuda_guess_rows(dgot, &router, dpost, din, 0);
    CK(cudaGetLastError());
    auto got = from_dev(dgot, elems), ref = from_dev(dwant, elems);
    char what[120];
    snprintf(what, sizeof what, "guess rows of a %d x %d router: same bits as the host's", E, K);
    result(what, memcmp(got.data(), ref.data(), elems * sizeof(bf16)) == 0);
    cudaFree(dw); cudaFree(dwant); cudaFree(dgot); cudaFree(dpost); cudaFree(din);
}

// ---- the prologue's pick ------------------------------------------------------------------------

// The k largest of v (NaN as -inf, ties to the lower id), in increasing id order.
static std::vector<int32_t> host_top(const std::vector<float> &v, int k) {
    std::vector<int32_t> ids(v.size());
    for (size_t i = 0; i < v.size(); i++) ids[i] = (int32_t)i;
    auto key = [&](int32_t i) { return v[i] == v[i] ? v[i] : -INFINITY; };
    std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return key(a) > key(b); });
    ids.resize(k);
    std::sort(ids.begin(), ids.end());
    return ids;
}

// A one-token prologue (q/k norm, RoPE, K/V into the cache) with and without the guess: the guess
// block writes the host's top-k, and q and the cache get the same bits either way. full: the
// prologue that norms q and k over the whole projection (its other kernel).
static void check_guess_pick(int E, int k, int mode, bool full) {
    const int hd = 32, nh = 4, nkv = 2, qd = nh * hd, kvd = nkv * hd, width = qd + 2 * kvd, layers = 2;
    std::vector<float> row(width + mt_round16(E), 0.0f), qn(full ? qd : hd), kn(full ? kvd : hd), inv(hd / 2);
    for (auto &v : row) v = frand();
    for (auto &v : qn) v = 1.0f + 0.3f * frand();
    for (auto &v : kn) v = 1.0f + 0.3f * frand();
    for (int i = 0; i < hd / 2; i++) inv[i] = powf(10000.0f, -2.0f * i / hd);
    std::vector<float> logits(E);
    for (int e = 0; e < E; e++) {
        float v = frand();
        if (mode == 1) v = (float)(e % 5);                              // ties
        if (mode == 2) v = e % 3 == 0 ? NAN : e % 3 == 1 ? 1.0f : -INFINITY;   // NaNs and infinities
        logits[e] = v;
        row[width + e] = v;
    }
    std::vector<int32_t> pos = {37}, blk = {1};
    float *drow = to_dev(row), *dqn = to_dev(qn), *dkn = to_dev(kn), *dinv = to_dev(inv);
    int32_t *dpos = to_dev(pos), *dblk = to_dev(blk), *dguess;
    CK(cudaMalloc(&dguess, 32 * sizeof(int32_t)));
    CK(cudaMemset(dguess, 0xff, 32 * sizeof(int32_t)));
    const size_t cache = (size_t)2 * layers * 16 * kvd;
    bf16 *kc, *vc, *q;
    CK(cudaMalloc(&kc, cache * sizeof(bf16)));
    CK(cudaMalloc(&vc, cache * sizeof(bf16)));
    CK(cudaMalloc(&q, qd * sizeof(bf16)));
    mt_qk_prep_args a = {};
    a.qkv = drow;
    a.n = 1;
    a.n_heads = nh;
    a.n_kv_heads = nkv;
    a.head_dim = hd;
    a.q_norm = dqn;
    a.k_norm = dkn;
    a.qk_norm_full = full;
    a.eps = 1e-6f;
    a.inv_freq = dinv;
    a.rope_scale = 1.0f;
    a.positions = dpos;
    a.kv_block = dblk;
    a.k_cache = kc;
    a.v_cache = vc;
    a.layer = 1;
    a.num_layers = layers;
    a.q_out = q;
    std::vector<bf16> outs[2][3];
    for (int guess = 0; guess < 2; guess++) {
        CK(cudaMemset(kc, 0, cache * sizeof(bf16)));
        CK(cudaMemset(vc, 0, cache * sizeof(bf16)));
        CK(cudaMemset(q, 0, qd * sizeof(bf16)));
        if (guess) {
            a.guess_logits = drow + width;
            a.guess_E = E;
            a.guess_k = k;
            a.guess_out = dguess;
        }
        mt_cuda_qk_prep(&a, 0);
        CK(cudaGetLastError());
        outs[guess][0] = from_dev(q, qd);
        outs[guess][1] = from_dev(kc, cache);
        outs[guess][2] = from_dev(vc, cache);
    }
    auto got = from_dev(dguess, 32);
    const std::vector<int32_t> want = host_top(logits, k);
    bool picked = true, same = true, rest = true;
    for (int i = 0; i < k; i++) picked = picked && got[i] == want[i];
    for (int i = k; i < 32; i++) rest = rest && got[i] == -1;
    for (int j = 0; j < 3; j++)
        same = same && memcmp(outs[0][j].data(), outs[1][j].data(), outs[0][j].size() * sizeof(bf16)) == 0;
    const char *modes[] = {"random", "ties", "NaN and infinite"};
    char what[160];
    snprintf(what, sizeof what, "prologue%s picks the top %d of %d %s logits", full ? " (full q/k norm)" : "", k, E, modes[mode]);
    result(what, picked && rest);
    snprintf(what, sizeof what, "  q and the cache: same bits with the guess block");
    result(what, same);
    cudaFree(drow); cudaFree(dqn); cudaFree(dkn); cudaFree(dinv); cudaFree(dpos); cudaFree(dblk); cudaFree(dguess);
    cudaFree(kc); cudaFree(vc); cudaFree(q);
}

// ---- the gate/up product of one token with a guess ----------------------------------------------

// One token's gate/up (k picks of E experts, rows = 2 x intermediate) without a guess, then with
// each kind of guess: the same bits every time; where every warp's slice holds the ring's stages
// (K >= 1024 here) blocks guess, a right guess (in any order) never misses and a guess of experts
// the router did not pick always does.
static void check_guessed_product(int rows, int K, int E, int k) {
    const size_t stride = mt_dmat_elems(rows, K);
    std::vector<int> counts(E, 0);
    std::vector<int32_t> picks;
    for (int j = 0; j < k; j++) {
        int e = (j * 37 + 11) % E;
        while (counts[e]) e = (e + 1) % E;
        counts[e] = 1;
    }
    for (int e = 0; e < E; e++)
        if (counts[e]) picks.push_back(e);
    bf16 *dw;
    CK(cudaMalloc(&dw, stride * E * sizeof(bf16)));
    for (int e = 0; e < E; e++) {
        std::vector<float> we((size_t)rows * K);
        for (auto &v : we) v = __bfloat162float(__float2bfloat16(frand() / sqrtf((float)K)));
        bf16 *t = tiled(we, rows, K, true);
        CK(cudaMemcpy(dw + e * stride, t, stride * sizeof(bf16), cudaMemcpyDeviceToDevice));
        cudaFree(t);
    }
    std::vector<bf16> xb(K);
    for (auto &v : xb) v = __float2bfloat16(frand());
    HostSort hs = host_sort(counts, 64, [](int, int) { return 0; });
    const size_t out_bytes = (size_t)k * (rows / 2) * sizeof(bf16);
    bf16 *dx = to_dev(xb);
    void *dout;
    CK(cudaMalloc(&dout, out_bytes));
    mt_linear_args a = {};
    a.W = {dw, rows, mt_round16(rows), K};
    a.group_stride = stride;
    a.X = dx;
    a.ldx = K;
    a.x_rows = 1;
    hs.set_grouped(a, 64);
    a.max_work = k;   // as the engine sets them for one token
    a.rows_max = 1;
    a.out = dout;
    a.ldo = rows / 2;
    a.epilogue = MT_EPI_SWIGLU;
    a.weights_once = 1;
    CK(cudaMemset(dout, 0xff, out_bytes));
    mt_cuda_linear_small(&a, 0);
    CK(cudaGetLastError());
    std::vector<char> want(out_bytes), got(out_bytes);
    CK(cudaMemcpy(want.data(), dout, out_bytes, cudaMemcpyDeviceToHost));
    // the guesses: right, right in another order, all wrong, every other one wrong, repeated, out of range
    std::vector<int32_t> wrong;
    for (int e = 0; e < E && (int)wrong.size() < k; e++)
        if (!counts[e]) wrong.push_back(e);
    std::vector<std::vector<int32_t>> guesses(6, picks);
    std::reverse(guesses[1].begin(), guesses[1].end());
    guesses[2] = wrong;
    for (int j = 1; j < k; j += 2) guesses[3][j] = wrong[j];
    for (int j = 0; j < k; j++) guesses[4][j] = picks[j / 2 * 2];
    for (int j = 0; j < k; j += 2) guesses[5][j] = j % 4 ? -7 : E + 3;
    const char *names[] = {"right", "right, in another order", "all wrong", "half wrong", "repeated", "out of range"};
    int *dtally;
    CK(cudaMalloc(&dtally, 2 * sizeof(int)));
    bool ok = true;
    for (int c = 0; c < 6; c++) {
        int32_t *dg = to_dev(guesses[c]);
        a.guess = dg;
        a.guess_tally = dtally;
        CK(cudaMemset(dtally, 0, 2 * sizeof(int)));
        CK(cudaMemset(dout, 0xff, out_bytes));
        mt_cuda_linear_small(&a, 0);
        CK(cudaGetLastError());
        CK(cudaMemcpy(got.data(), dout, out_bytes, cudaMemcpyDeviceToHost));
        auto t = from_dev(dtally, 2);
        const bool same = memcmp(want.data(), got.data(), out_bytes) == 0;
        const bool counted = K >= 1024 ? t[0] > 0 : t[0] == 0;
        const bool misses = (c > 1 || t[1] == 0) && (c != 2 || t[1] == t[0]) && t[1] <= t[0];
        if (!same || !counted || !misses) {
            ok = false;
            printf("    %s guess: %s, %d of %d blocks missed\n", names[c], same ? "same bits" : "DIFFERENT bits", t[1], t[0]);
        }
        cudaFree(dg);
    }
    char what[160];
    snprintf(what, sizeof what, "one token's gate/up with guesses: rows %d K %d, top-%d of %d", rows, K, k, E);
    result(what, ok);
    cudaFree(dtally);
    for (void *p : hs.device_buffers()) cudaFree(p);
    cudaFree(dw); cudaFree(dx); cudaFree(dout);
}

int main() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("test_cuda_guess: no CUDA device; skipped\n");
        return 77;
    }
    printf("guess rows\n");
    check_guess_rows(128, 2048);
    check_guess_rows(60, 64);
    printf("the prologue's pick\n");
    for (int mode = 0; mode < 3; mode++) check_guess_pick(128, 8, mode, false);
    check_guess_pick(256, 32, 0, false);
    check_guess_pick(60, 4, 1, true);
    check_guess_pick(8, 8, 0, false);
    printf("gate/up with guesses\n");
    check_guessed_product(1536, 2048, 128, 8);   // Qwen3-30B-A3B
    check_guessed_product(512, 1024, 60, 4);
    check_guessed_product(256, 2048, 256, 32);
    check_guessed_product(64, 64, 8, 8);         // one stage an item: no block guesses
    printf(failures ? "test_cuda_guess: %d FAILED\n" : "test_cuda_guess: all passed\n", failures);
    return failures ? 1 : 0;
}
