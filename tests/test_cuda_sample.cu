// Sampling on the device (mt_cuda_sample) against the CPU's mt_sample_pick, the definition in
// kernels/sample.h (skipped without a device): rows of random logits under temperature, top-k and
// top-p, ties, -inf and NaN logits, greedy rows left to their argmax, at vocabulary sizes up to
// Qwen3's; and each row's token unchanged when it sits elsewhere in a batch of another size. The
// tokens' log-probabilities (mt_cuda_token_logprob) against the host's mt_token_logprob, and
// unchanged bit for bit in the other batch. The rows' top lists and targeted log-probabilities
// against the host's mt_top_logprobs / mt_token_logprob (ids exactly; a listed token's value the
// same bits as the device's log-probability of that token), also unchanged in another batch. Rows
// with min-p among them. The logit changes (mt_cuda_adjust_logits) bit for bit as the host's.
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "cuda_test_util.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/sample.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next32() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static float uniform() { return (float)(next32() >> 8) / 16777216.0f; }

struct Batch {
    int V, ld;
    std::vector<float> logits;
    std::vector<mt_sample_row> rows;
};

// n zeroed rows of V logits, each padded to a multiple of 16 floats as the forward pass pads them.
static Batch empty_batch(int V, int n) {
    Batch b;
    b.V = V;
    b.ld = (V + 15) / 16 * 16;
    b.logits.assign((size_t)n * b.ld, 0.0f);
    return b;
}

// Row i's logits: kind 0 spread logits, 1 coarse (many ties), 2 a peaked row, 3 with -inf and NaN.
static void fill_row(float *x, int V, int kind) {
    for (int j = 0; j < V; j++) {
        float v = uniform() * 16.0f - 8.0f;
        if (kind == 1) v = roundf(v);
        if (kind == 2) v = j % 997 == 0 ? 20.0f + uniform() : v - 10.0f;
        if (kind == 3 && j % 5 == 1) v = -INFINITY;
        if (kind == 3 && j % 11 == 2) v = NAN;
        x[j] = v;
    }
}

// Tokens of every row on the device: argmax for all, then the sampling kernel.
static std::vector<int32_t> device_tokens(const Batch &b) {
    int n = (int)b.rows.size();
    float *logits = to_dev(b.logits);
    mt_sample_row *rows = to_dev(b.rows);
    int32_t *tokens;
    float *scratch;
    CK(cudaMalloc(&tokens, n * sizeof(int32_t)));
    CK(cudaMalloc(&scratch, 2 * mt_cuda_argmax_scratch(n, b.V) * sizeof(float)));
    mt_cuda_argmax(tokens, logits, b.ld, n, b.V, scratch, 0);
    mt_cuda_sample(tokens, logits, b.ld, n, b.V, rows, 0);
    CK(cudaGetLastError());
    std::vector<int32_t> out(n);
    CK(cudaMemcpy(out.data(), tokens, n * sizeof(int32_t), cudaMemcpyDeviceToHost));
    cudaFree(logits);
    cudaFree(rows);
    cudaFree(tokens);
    cudaFree(scratch);
    return out;
}

// Each row's token's log-probability on the device (mt_cuda_token_logprob), rows or not.
static std::vector<float> device_logprobs(const Batch &b, const std::vector<int32_t> &tok, bool with_rows) {
    int n = (int)b.rows.size();
    float *logits = to_dev(b.logits), *out;
    mt_sample_row *rows = to_dev(b.rows);
    int32_t *tokens = to_dev(tok);
    CK(cudaMalloc(&out, n * sizeof(float)));
    mt_cuda_token_logprob(out, tokens, nullptr, logits, b.ld, n, b.V, with_rows ? rows : nullptr, 0, nullptr, nullptr,
                          nullptr, nullptr, nullptr,
                          0);
    CK(cudaGetLastError());
    std::vector<float> lp(n);
    CK(cudaMemcpy(lp.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost));
    cudaFree(logits);
    cudaFree(rows);
    cudaFree(tokens);
    cudaFree(out);
    return lp;
}

// Device log-probabilities against the host's mt_token_logprob (double sums): within 2e-5.
static int check_logprobs(const Batch &b, const std::vector<int32_t> &tok, bool with_rows, std::vector<float> *keep) {
    std::vector<float> lp = device_logprobs(b, tok, with_rows);
    int n = (int)b.rows.size(), bad = 0;
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        float want = mt_token_logprob(with_rows ? &b.rows[i] : nullptr, &b.logits[(size_t)i * b.ld], b.V, tok[i]);
        double d = fabs((double)lp[i] - want) / fmax(1.0, fabs(want));
        worst = fmax(worst, d);
        if (!(d <= 2e-5)) {
            if (bad++ < 5) printf("    row %d token %d: device %.9g, host %.9g\n", i, tok[i], lp[i], want);
        }
    }
    printf("  vocab %6d: %d log-probabilities (%s), worst relative difference %.2g %s\n", b.V, n,
           with_rows ? "at each row's temperature" : "T 1", worst, bad ? "FAIL" : "ok");
    if (keep) *keep = lp;
    return bad != 0;
}

// Rows for the top lists: kinds 0-3 as fill_row; 4 three listable logits (a tie and a -inf) among
// NaN; 5 -inf and NaN only (listed, values NaN); 6 NaN only (nothing listed).
static void fill_top_row(float *x, int V, int kind) {
    if (kind < 4) {
        fill_row(x, V, kind);
        return;
    }
    for (int j = 0; j < V; j++) x[j] = kind == 5 && j % 2 ? -INFINITY : NAN;
    if (kind == 4) {
        x[0] = 1.5f;
        x[V / 2] = -INFINITY;
        x[V - 1] = 1.5f;
    }
}

// One launch of mt_cuda_token_logprob with top lists (k > 0) or without: the scored tokens'
// values (when want_out) and the lists.
struct TopRun {
    std::vector<float> out, lps, listed;   // listed: with_ids, the values of each row's 3 listed tokens
    std::vector<int32_t> ids;
};

// The tokens row i lists when a launch lists tokens: 0, V / 2 and its own token.
static void listed_of(int V, int32_t own, int32_t *three) {
    three[0] = 0;
    three[1] = V / 2;
    three[2] = own;
}
static TopRun device_top(const Batch &b, const std::vector<int32_t> &tok, const std::vector<int32_t> &targets,
                         bool with_rows, int k, bool want_out, bool with_ids = false) {
    int n = (int)b.rows.size();
    float *logits = to_dev(b.logits), *out = nullptr, *lps = nullptr, *listed = nullptr;
    mt_sample_row *rows = to_dev(b.rows);
    int32_t *tokens = to_dev(tok), *targ = to_dev(targets), *ids = nullptr, *ids_off = nullptr, *ids_list = nullptr;
    if (with_ids) {
        std::vector<int32_t> off(n + 1), list(3 * (size_t)n);
        for (int i = 0; i <= n; i++) off[i] = 3 * i;
        for (int i = 0; i < n; i++) listed_of(b.V, tok[i], &list[3 * (size_t)i]);
        ids_off = to_dev(off);
        ids_list = to_dev(list);
        CK(cudaMalloc(&listed, 3 * (size_t)n * sizeof(float)));
    }
    if (want_out) CK(cudaMalloc(&out, n * sizeof(float)));
    if (k > 0) {
        CK(cudaMalloc(&ids, (size_t)n * k * sizeof(int32_t)));
        CK(cudaMalloc(&lps, (size_t)n * k * sizeof(float)));
    }
    mt_cuda_token_logprob(out, tokens, targ, logits, b.ld, n, b.V, with_rows ? rows : nullptr, k, ids, lps, ids_off,
                          ids_list, listed, 0);
    CK(cudaGetLastError());
    TopRun r;
    if (want_out) r.out = from_dev(out, n);
    if (with_ids) r.listed = from_dev(listed, 3 * (size_t)n);
    cudaFree(ids_off);
    cudaFree(ids_list);
    cudaFree(listed);
    if (k > 0) {
        r.ids = from_dev(ids, (size_t)n * k);
        r.lps = from_dev(lps, (size_t)n * k);
    }
    cudaFree(logits);
    cudaFree(rows);
    cudaFree(tokens);
    cudaFree(targ);
    cudaFree(out);
    cudaFree(ids);
    cudaFree(lps);
    return r;
}

// Whether device value got is host value want within 1e-5 (relative above 1); a non-finite host
// value must come back the same (NaN as NaN, -inf as -inf).
static bool close_to(float got, float want, double *worst) {
    if (!isfinite(want)) return isnan(want) ? isnan(got) : got == want;
    double d = fabs((double)got - want) / fmax(1.0, fabs(want));
    if (d > *worst) *worst = d;
    return d <= 1e-5;
}

static bool same_bits(const void *a, const void *b, size_t bytes) { return !memcmp(a, b, bytes); }
// The same bits, or both NaN: a NaN's payload after an operation is the processor's own (the device
// gives its canonical NaN, the host keeps the operand's), and no NaN logit is ever picked or scored.
static bool same_values(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(a[i] != a[i] && b[i] != b[i]) && !same_bits(&a[i], &b[i], sizeof(float))) return false;
    return true;
}

// The top k of every row of b and the targeted log-probabilities (targets of a third of the rows
// -1: their own token) against the host; each listed value against the device's log-probability of
// that token (k = 0 launches, targets the listed ids) bit for bit; the scored values the same with
// and without lists; the lists the same without out and with the rows moved to another batch.
static int check_top(const Batch &b, const std::vector<int32_t> &tok, bool with_rows, int k) {
    int n = (int)b.rows.size(), V = b.V, bad = 0;
    std::vector<int32_t> targets(n);
    for (int i = 0; i < n; i++) targets[i] = i % 3 == 0 ? -1 : (int32_t)(next32() % (uint32_t)V);
    TopRun r = device_top(b, tok, targets, with_rows, k, true, true);
    std::vector<int32_t> ids(k);
    std::vector<float> lps(k);
    double worst = 0.0;
    int listed_total = 0, short_rows = 0;
    for (int i = 0; i < n; i++) {
        const mt_sample_row *spec = with_rows ? &b.rows[i] : nullptr;
        const float *x = &b.logits[(size_t)i * b.ld];
        int listed = mt_top_logprobs(spec, x, V, k, ids.data(), lps.data());
        listed_total += listed;
        short_rows += listed < k;
        for (int j = 0; j < k; j++) {
            int32_t gi = r.ids[(size_t)i * k + j];
            float gv = r.lps[(size_t)i * k + j];
            if (gi != ids[j] || !close_to(gv, lps[j], &worst)) {
                if (bad++ < 5)
                    printf("    row %d place %d: device id %d value %.9g, host id %d value %.9g\n", i, j, gi, gv,
                           ids[j], lps[j]);
            }
        }
        int scored = targets[i] >= 0 ? targets[i] : tok[i];
        int32_t three[3];
        float three_lp[3];
        listed_of(V, tok[i], three);
        mt_ids_logprobs(spec, x, V, three, 3, three_lp);
        for (int j = 0; j < 3; j++) {   /* listed tokens: against the host, and the scored value's bits */
            float got = r.listed[3 * (size_t)i + j];
            bool same_as_scored = j < 2 || targets[i] >= 0 || same_bits(&got, &r.out[i], sizeof got);
            if (!close_to(got, three_lp[j], &worst) || !same_as_scored) {
                if (bad++ < 5)
                    printf("    row %d listed token %d: device %.9g, host %.9g%s\n", i, three[j], got, three_lp[j],
                           same_as_scored ? "" : ", not the scored value's bits");
            }
        }
        float want = mt_token_logprob(spec, x, V, scored);
        if (!close_to(r.out[i], want, &worst)) {
            if (bad++ < 5) printf("    row %d token %d: device %.9g, host %.9g\n", i, scored, r.out[i], want);
        }
    }
    printf("  vocab %6d k %2d: %d top lists and 3 listed tokens a row (%s, %d listed, %d rows short of k), worst relative difference %.2g %s\n",
           V, k, n, with_rows ? "at each row's temperature" : "T 1", listed_total, short_rows, worst,
           bad ? "FAIL" : "ok");

    // the scored values without lists (k = 0): the same bits
    TopRun plain = device_top(b, tok, targets, with_rows, 0, true);
    bool same_out = same_bits(plain.out.data(), r.out.data(), n * sizeof(float));
    // each place's listed value against the device's log-probability of its token
    int bits_bad = 0;
    for (int j = 0; j < k; j++) {
        std::vector<int32_t> place(n);
        for (int i = 0; i < n; i++) place[i] = r.ids[(size_t)i * k + j];
        TopRun at = device_top(b, tok, place, with_rows, 0, true);
        for (int i = 0; i < n; i++)
            if (place[i] >= 0 && !same_bits(&at.out[i], &r.lps[(size_t)i * k + j], sizeof(float))) {
                if (bits_bad++ < 5)
                    printf("    row %d place %d token %d: listed %.9g, scored %.9g\n", i, j, place[i],
                           r.lps[(size_t)i * k + j], at.out[i]);
            }
    }
    // only the lists (out NULL): the same lists
    TopRun lists = device_top(b, tok, targets, with_rows, k, false);
    bool same_lists = lists.ids == r.ids && same_bits(lists.lps.data(), r.lps.data(), r.lps.size() * sizeof(float));
    // the rows in reverse order, a third of them, in another batch: the same lists and values
    Batch c;
    c.V = V;
    c.ld = b.ld;
    int m = n / 3;
    std::vector<int32_t> tok_c, targ_c;
    for (int i = 0; i < m; i++) {
        int src = n - 1 - i;
        c.logits.insert(c.logits.end(), b.logits.begin() + (size_t)src * b.ld, b.logits.begin() + (size_t)(src + 1) * b.ld);
        c.rows.push_back(b.rows[src]);
        tok_c.push_back(tok[src]);
        targ_c.push_back(targets[src]);
    }
    TopRun moved = device_top(c, tok_c, targ_c, with_rows, k, true);
    bool same_moved = true;
    for (int i = 0; i < m; i++) {
        size_t src = (size_t)(n - 1 - i);
        same_moved &= same_bits(&moved.out[i], &r.out[src], sizeof(float));
        same_moved &= same_bits(&moved.ids[(size_t)i * k], &r.ids[src * k], k * sizeof(int32_t));
        same_moved &= same_bits(&moved.lps[(size_t)i * k], &r.lps[src * k], k * sizeof(float));
    }
    printf("  vocab %6d k %2d: listed values are the scored values bit for bit %s; scored values the same without "
           "lists %s; lists the same without scored values %s; rows moved to another batch keep them %s\n",
           V, k, bits_bad ? "FAIL" : "ok", same_out ? "ok" : "FAIL", same_lists ? "ok" : "FAIL",
           same_moved ? "ok" : "FAIL");
    return (bad != 0) + (bits_bad != 0) + !same_out + !same_lists + !same_moved;
}

// Logit changes on the device (mt_cuda_adjust_logits) against the host's mt_logit_adjusted, bit for
// bit (a NaN logit stays NaN, whatever its payload): scales on positive, negative, zero, infinite
// and NaN logits, additions, bars; a count read from the device list, so the same launch takes 0
// changes.
static int check_adjust() {
    const int V = 3001, ld = (V + 15) / 16 * 16, n = 6;
    std::vector<float> x((size_t)n * ld, 0.0f);
    for (int i = 0; i < n; i++) fill_row(&x[(size_t)i * ld], V, i % 4);
    x[7] = 0.0f;
    x[8] = -0.0f;
    x[9] = INFINITY;
    std::vector<mt_logit_adjust> changes;
    const float scales[] = {1.0f, 1.5f, 0.7f, 2.0f};
    const float adds[] = {0.0f, -0.75f, 2.0f, -INFINITY, 100.0f};
    for (int r = 0; r < n; r++)
        for (int t = r; t < V; t += 1 + (int)(next32() % 40))
            changes.push_back(mt_logit_adjust{r, t, scales[next32() % 4], adds[next32() % 5]});
    std::vector<int32_t> list(4 + changes.size() * MT_LOGIT_ADJUST_WORDS, 0);
    list[0] = (int32_t)changes.size();
    memcpy(&list[4], changes.data(), changes.size() * sizeof(mt_logit_adjust));
    float *dx = to_dev(x);
    int32_t *dl = to_dev(list);
    mt_cuda_adjust_logits(dx, ld, dl, 32, 0);
    CK(cudaGetLastError());
    std::vector<float> got = from_dev(dx, x.size());
    std::vector<float> want = x;
    for (const mt_logit_adjust &a : changes) {
        float *v = &want[(size_t)a.row * ld + a.token];
        *v = mt_logit_adjusted(*v, &a);
    }
    bool same = same_values(got.data(), want.data(), x.size());
    for (size_t i = 0, shown = 0; i < x.size() && shown < 3; i++)
        if (!same_values(&got[i], &want[i], 1)) {
            uint32_t gb, wb;
            memcpy(&gb, &got[i], 4);
            memcpy(&wb, &want[i], 4);
            printf("    row %zu token %zu: device %g (%08x), host %g (%08x)\n", i / ld, i % ld, got[i], gb, want[i], wb);
            shown++;
        }
    // an empty list leaves the logits as they are
    std::vector<int32_t> none(4, 0);
    int32_t *dn = to_dev(none);
    mt_cuda_adjust_logits(dx, ld, dn, 32, 0);
    std::vector<float> again = from_dev(dx, x.size());
    bool kept = same_bits(again.data(), got.data(), x.size() * sizeof(float));
    printf("  logit changes: %zu changes as mt_logit_adjusted, bit for bit %s; none changes nothing %s\n",
           changes.size(), same ? "ok" : "FAIL", kept ? "ok" : "FAIL");
    cudaFree(dx);
    cudaFree(dl);
    cudaFree(dn);
    return !same + !kept;
}

int main() {
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        printf("test_cuda_sample: no CUDA device; skipped\n");
        return 77;
    }
    int failures = 0;
    const int vocabs[] = {7, 3000, 151936};
    const float temps[] = {0.0f, 0.25f, 1.0f, 2.0f};
    const int ks[] = {0, 1, 20, 1000};
    const float ps[] = {1.0f, 0.95f, 0.3f};
    for (int V : vocabs) {
        int n = V > 10000 ? 96 : 384;
        Batch b = empty_batch(V, n);
        for (int i = 0; i < n; i++) {
            fill_row(&b.logits[(size_t)i * b.ld], V, i % 4);
            mt_sample_row r = {temps[(i / 4) % 4], ks[(i / 16) % 4], ps[(i / 64 + i) % 3], next32() & 0xffffffu};
            if (i % 29 == 0) r.u24 = i % 2 ? 0xffffffu : 0u;   // the extreme draws
            if (i % 5 == 3) r.min_p = i % 3 == 0 ? 1.0f : 0.01f + 0.3f * uniform();   // min-p, alone or with others
            b.rows.push_back(r);
        }
        std::vector<int32_t> got = device_tokens(b);
        std::vector<uint64_t> work(V);
        int differ = 0, sampled = 0;
        for (int i = 0; i < n; i++) {
            const float *x = &b.logits[(size_t)i * b.ld];
            int want = mt_sample_pick(&b.rows[i], x, V, work.data());
            sampled += b.rows[i].temperature > 0.0f;
            if (got[i] != want) {
                differ++;
                if (differ <= 5)
                    printf("    row %d (T %.2f k %d p %.2f u %u): device %d, host %d\n", i, b.rows[i].temperature,
                           b.rows[i].top_k, b.rows[i].top_p, b.rows[i].u24, got[i], want);
            }
        }
        // exp may differ in its last bit between libm and the device: a boundary draw may move
        bool ok = differ * 100 <= n;
        printf("  vocab %6d: %d rows (%d sampled), %d differ from mt_sample_pick %s\n", V, n, sampled, differ,
               ok ? "ok" : "FAIL");
        failures += !ok;

        // The same rows in reverse order, in a batch of a third of the size: the same tokens.
        Batch c;
        c.V = V;
        c.ld = b.ld;
        int m = n / 3;
        for (int i = 0; i < m; i++) {
            int src = n - 1 - i;
            c.logits.insert(c.logits.end(), b.logits.begin() + (size_t)src * b.ld, b.logits.begin() + (size_t)(src + 1) * b.ld);
            c.rows.push_back(b.rows[src]);
        }
        std::vector<int32_t> again = device_tokens(c);
        bool same = true;
        for (int i = 0; i < m; i++) same &= again[i] == got[n - 1 - i];
        printf("  vocab %6d: rows moved to another batch keep their tokens %s\n", V, same ? "ok" : "FAIL");
        failures += !same;

        std::vector<float> lp, lp_moved;
        failures += check_logprobs(b, got, true, &lp);
        failures += check_logprobs(b, got, false, nullptr);
        failures += check_logprobs(c, again, true, &lp_moved);
        bool same_lp = true;
        for (int i = 0; i < m; i++) same_lp &= !memcmp(&lp_moved[i], &lp[n - 1 - i], sizeof(float));
        printf("  vocab %6d: rows moved to another batch keep their log-probabilities bit for bit %s\n", V,
               same_lp ? "ok" : "FAIL");
        failures += !same_lp;
    }

    // Top lists and targeted log-probabilities: vocabularies not all multiples of 4, rows of every
    // kind at temperatures 0, 0.7 and 1.3, k = 1, 5 and 20 (past the listable logits of some rows,
    // and past the whole vocabulary of the smallest).
    const int top_vocabs[] = {5, 7, 1027, 3001, 151936};
    const float top_temps[] = {0.0f, 0.7f, 1.3f};
    const int top_ks[] = {1, 5, 20};
    for (int V : top_vocabs) {
        int n = V > 10000 ? 42 : 84;
        Batch b = empty_batch(V, n);
        std::vector<int32_t> tok(n);
        for (int i = 0; i < n; i++) {
            fill_top_row(&b.logits[(size_t)i * b.ld], V, i % 7);
            b.rows.push_back(mt_sample_row{top_temps[(i / 7) % 3], 0, 1.0f, 0u});
            tok[i] = (int32_t)(next32() % (uint32_t)V);
        }
        for (int k : top_ks) failures += check_top(b, tok, true, k);
        failures += check_top(b, tok, false, 5);
    }
    failures += check_adjust();
    printf("%s\n", failures ? "FAILED" : "all sampling checks passed");
    return failures ? 1 : 0;
}
