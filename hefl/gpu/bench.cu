// hefl/gpu/bench.cu — throughput probe for the Montgomery core (benchmarks only).
//
// A small module (compiles in seconds) so that the benchmark can compare lane counts
// (HEFL_TPI) for one limb count (HEFL_NL) without recompiling the full kernel set.
#include "mont.cuh"

// acc = montmul(acc, b) `iters` times per row; n is one modulus for all rows.
extern "C" __global__ void k_mul_chain(const u32* __restrict__ a, const u32* __restrict__ b,
                                       u32* __restrict__ out, long long count, int iters,
                                       const u32* __restrict__ n_row, u32 np0) {
    const Grp g = grp_make();
    const long long i = grp_index();
    if (i >= count) return;
    u32 n[LPT], x[LPT], y[LPT];
    grp_load_full(n, n_row, g);
    grp_load_full(x, a + i * NL, g);
    grp_load_full(y, b + i * NL, g);
#pragma unroll 1
    for (int s = 0; s < iters; ++s) mont_mul(x, x, y, n, np0, g);
    grp_store(out + i * NL, x, NL, g);
}
