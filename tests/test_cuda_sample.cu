// Sampling on the device (mt_cuda_sample) against the CPU's mt_sample_pick, the definition in
// kernels/sample.h (skipped without a device): rows of random logits under temperature, top-k and
// top-p, ties, -inf and NaN logits, greedy rows left to their argmax, at vocabulary sizes up to
// Qwen3's; and each row's token unchanged when it sits elsewhere in a batch of another size. The
// tokens' log-probabilities (mt_cuda_token_logprob) against the host's mt_token_logprob, and
// unchanged bit for bit in the other batch.
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
    mt_cuda_token_logprob(out, tokens, logits, b.ld, n, b.V, with_rows ? rows : nullptr, 0);
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
        Batch b;
        b.V = V;
        b.ld = (V + 15) / 16 * 16;
        int n = V > 10000 ? 96 : 384;
        b.logits.assign((size_t)n * b.ld, 0.0f);
        for (int i = 0; i < n; i++) {
            fill_row(&b.logits[(size_t)i * b.ld], V, i % 4);
            mt_sample_row r = {temps[(i / 4) % 4], ks[(i / 16) % 4], ps[(i / 64 + i) % 3], next32() & 0xffffffu};
            if (i % 29 == 0) r.u24 = i % 2 ? 0xffffffu : 0u;   // the extreme draws
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
    printf("%s\n", failures ? "FAILED" : "all sampling checks passed");
    return failures ? 1 : 0;
}
