// hefl/gpu/paillier.cu — batched Paillier kernels modulo N = n^2.
//
// Compiled once per key size with -DHEFL_NL=<limbs of n^2> -DHEFL_TPI=<lanes per number>
// (see mont.cuh).  Every kernel processes one number per group of TPI lanes; rows are
// C-contiguous little-endian uint32 limb arrays.  "Montgomery form" means x*R mod N with
// R = 2^(32*NL).
//
// Constant table K (rows of NL limbs, see hefl/gpu/backend.py, _K_* indices):
//   0 N        modulus n^2
//   1 R1       R mod N          (Montgomery one)
//   2 R2       R^2 mod N        (to Montgomery form)
//   3 NR       n*R mod N        (montmul(m, NR) = m*n)
//   4 NR2      n*R^2 mod N      (montmul(m, NR2) = m*n*R)
//   5 ONE      1                (montmul(x, ONE) leaves Montgomery form)
#include "mont.cuh"

#define K_N 0
#define K_R1 1
#define K_R2 2
#define K_NR 3
#define K_NR2 4
#define K_ONE 5

#define KROW(K, i) ((K) + (long long)(i) * NL)

// out[i] = montmul(a[i], b[i]) (b_stride 0: one b for all rows); with post != 0 the result
// is multiplied once more by K[post_row] (e.g. R2: a*b mod N from plain inputs).
extern "C" __global__ void k_mul(const u32* __restrict__ a, long long a_stride,
                                 const u32* __restrict__ b, long long b_stride,
                                 u32* __restrict__ out, long long count,
                                 const u32* __restrict__ K, u32 np0, int post_row) {
    const Grp g = grp_make();
    const long long i = grp_index();
    if (i >= count) return;
    u32 n[LPT], x[LPT], y[LPT];
    grp_load_full(n, KROW(K, K_N), g);
    grp_load_full(x, a + i * a_stride, g);
    grp_load_full(y, b + i * b_stride, g);
    const int steps = (post_row >= 0) ? 2 : 1;
#pragma unroll 1
    for (int s = 0; s < steps; ++s) {
        if (s == 1) grp_load_full(y, KROW(K, post_row), g);
        mont_mul(x, x, y, n, np0, g);
    }
    grp_store(out + i * NL, x, NL, g);
}

// Fixed-base comb for the DJN obfuscator hs^alpha: table[w][d] = hs^(d * 2^(wbits*w)) * R
// mod N (entry d = 0 is R, the Montgomery one, so every window costs one multiplication
// regardless of its digit).  Result in Montgomery form.
__device__ __forceinline__ void fixed_base(u32 acc[LPT], const u32* __restrict__ alpha,
                                           int alpha_words, int nwin, int wbits,
                                           const u32* __restrict__ table, const u32 n[LPT],
                                           u32 np0, const Grp& g) {
    const long long width = 1ll << wbits;
    u32 nxt[LPT], b[LPT];
    u32 d = get_bits(alpha, alpha_words, 0, wbits);
    grp_load_full(acc, table + (long long)d * NL, g);
    if (nwin > 1) {
        d = get_bits(alpha, alpha_words, wbits, wbits);
        grp_load_full(nxt, table + (width + d) * NL, g);
    }
#pragma unroll 1
    for (int w = 1; w < nwin; ++w) {
        grp_copy(b, nxt);
        if (w + 1 < nwin) {  // prefetch the next window's entry while this one multiplies
            d = get_bits(alpha, alpha_words, (w + 1) * wbits, wbits);
            grp_load_full(nxt, table + ((long long)(w + 1) * width + d) * NL, g);
        }
        mont_mul(acc, acc, b, n, np0, g);
    }
}

// out[i] = hs^alpha[i] * R mod N (obfuscators in Montgomery form); with to_plain != 0
// converted back to plain form.
extern "C" __global__ void k_fixed_base(const u32* __restrict__ alpha, int alpha_words,
                                        int nwin, int wbits, const u32* __restrict__ table,
                                        u32* __restrict__ out, long long count,
                                        const u32* __restrict__ K, u32 np0, int to_plain) {
    const Grp g = grp_make();
    const long long i = grp_index();
    if (i >= count) return;
    u32 n[LPT], acc[LPT], y[LPT];
    grp_load_full(n, KROW(K, K_N), g);
    fixed_base(acc, alpha + i * alpha_words, alpha_words, nwin, wbits, table, n, np0, g);
    if (to_plain) {
        grp_load_full(y, KROW(K, K_ONE), g);
        mont_mul(acc, acc, y, n, np0, g);
    }
    grp_store(out + i * NL, acc, NL, g);
}

// One doubling step of the fixed-base table build.  The host uploads, for every window w,
// T[w][0] = R and T[w][2^k] = hs^(2^(wbits*w + k)) * R for k < wbits; the step for
// half = 2^k (k >= 1) fills T[w][half + j] = T[w][j] * T[w][half] for 0 < j < half, so
// after the steps half = 2, 4, ..., 2^(wbits-1) every entry is present.
extern "C" __global__ void k_fb_table_step(u32* __restrict__ table, int nwin, int wbits,
                                           int half, const u32* __restrict__ K, u32 np0) {
    const Grp g = grp_make();
    const long long i = grp_index();
    const long long width = 1ll << wbits;
    if (half < 2 || i >= (long long)nwin * (half - 1)) return;
    const long long w = i / (half - 1), j = 1 + i % (half - 1);
    u32 n[LPT], x[LPT], y[LPT];
    grp_load_full(n, KROW(K, K_N), g);
    grp_load_full(x, table + (w * width + j) * NL, g);
    grp_load_full(y, table + (w * width + half) * NL, g);
    mont_mul(x, x, y, n, np0, g);
    grp_store(table + (w * width + half + j) * NL, x, NL, g);
}

// Encryption c = (1 + m*n) * obf mod N, as gm = montmul(m, K[k1]) + K[k0] mod N followed by
// c = montmul(gm, obf).  The caller picks the rows so that the Montgomery factors cancel:
//   obf plain,  c plain:  k1 = NR2, k0 = R1  (gm = (1+mn)R, c = (1+mn)*obf)
//   obf Mont.,  c plain:  k1 = NR,  k0 = ONE (gm = 1+mn)
//   obf Mont.,  c Mont.:  k1 = NR2, k0 = R1
// With fused != 0 the obfuscator is computed here (fixed-base over alpha, Montgomery form)
// instead of being read from obf: a fresh one per row, fused with the encryption.
extern "C" __global__ void k_encrypt(const u32* __restrict__ m, int m_words,
                                     const u32* __restrict__ obf,
                                     const u32* __restrict__ alpha, int alpha_words, int nwin,
                                     int wbits, const u32* __restrict__ table,
                                     u32* __restrict__ out, long long count,
                                     const u32* __restrict__ K, u32 np0, int k1, int k0,
                                     int fused) {
    const Grp g = grp_make();
    const long long i = grp_index();
    if (i >= count) return;
    u32 n[LPT], r[LPT], x[LPT], y[LPT];
    grp_load_full(n, KROW(K, K_N), g);
    if (fused) {
        fixed_base(r, alpha + i * alpha_words, alpha_words, nwin, wbits, table, n, np0, g);
    } else {
        grp_load_full(r, obf + i * NL, g);
    }
    grp_load(x, m + i * m_words, m_words, g);
#pragma unroll 1
    for (int s = 0; s < 2; ++s) {
        // step 0: x = m * K[k1];  step 1: x = (x + K[k0] mod N) * r
        if (s == 0) {
            grp_load_full(y, KROW(K, k1), g);
        } else {
            grp_load_full(y, KROW(K, k0), g);
            grp_modadd(x, x, y, n, g);
            grp_copy(y, r);
        }
        mont_mul(x, x, y, n, np0, g);
    }
    grp_store(out + i * NL, x, NL, g);
}

// out[i] = a[i]^e[i] mod N.  e rows have e_words limbs (e_stride 0: one exponent for all),
// only the low e_bits bits are used.  in_mont / out_mont say whether a / out are in
// Montgomery form (plain inputs are converted with R2, plain outputs with ONE).
extern "C" __global__ void k_pow(const u32* __restrict__ a, const u32* __restrict__ e,
                                 int e_words, long long e_stride, int e_bits,
                                 u32* __restrict__ out, long long count,
                                 const u32* __restrict__ K, u32 np0, int in_mont,
                                 int out_mont) {
    const Grp g = grp_make();
    const long long i = grp_index();
    if (i >= count) return;
    u32 n[LPT], x[LPT], y[LPT], one[LPT];
    grp_load_full(n, KROW(K, K_N), g);
    grp_load_full(one, KROW(K, K_R1), g);
    grp_load_full(x, a + i * NL, g);
    if (!in_mont) {
        grp_load_full(y, KROW(K, K_R2), g);
        mont_mul(x, x, y, n, np0, g);
    }
    mont_pow(x, x, e + i * e_stride, e_words, e_bits, one, n, np0, g);
    if (!out_mont) {
        grp_load_full(y, KROW(K, K_ONE), g);
        mont_mul(x, x, y, n, np0, g);
    }
    grp_store(out + i * NL, x, NL, g);
}

// Histogram, stage 1.  Group (f, c) multiplies the rows of chunk c into the partial
// buckets partial[f][ids[i, f]][c] (layout (F, B, C, NL), Montgomery form; the caller
// fills partial with R1 so that stage 2 can reduce each (f, b) run over c with k_reduce).
// ids == -1 skips the row.  Each group owns its partial rows, so no atomics are needed;
// the read-modify-write of a bucket goes through L1/L2.
extern "C" __global__ void k_bucket_partial(const u32* __restrict__ a,
                                            const int* __restrict__ ids, long long n_rows,
                                            int n_feat, int n_buckets, int n_chunks,
                                            long long chunk, u32* __restrict__ partial,
                                            const u32* __restrict__ K, u32 np0) {
    const Grp g = grp_make();
    const long long gi = grp_index();
    if (gi >= (long long)n_feat * n_chunks) return;
    const int f = (int)(gi / n_chunks);
    const long long c = gi % n_chunks;
    const long long lo = c * chunk;
    long long hi = lo + chunk;
    if (hi > n_rows) hi = n_rows;
    u32 n[LPT], x[LPT], acc[LPT];
    grp_load_full(n, KROW(K, K_N), g);
#pragma unroll 1
    for (long long r = lo; r < hi; ++r) {
        const int id = ids[r * n_feat + f];
        if (id < 0) continue;  // uniform within the group: all lanes read the same id
        u32* __restrict__ bucket =
            partial + (((long long)f * n_buckets + id) * n_chunks + c) * NL;
        grp_load_full(x, a + r * NL, g);
        grp_load_full(acc, bucket, g);
        mont_mul(acc, acc, x, n, np0, g);
        grp_store(bucket, acc, NL, g);
    }
}

// Product of runs: out[m][j] = prod_{k in [j*span, min(K, (j+1)*span))} in[m][k]
// (Montgomery form).  Used for sums and the second histogram stage.
extern "C" __global__ void k_reduce(const u32* __restrict__ in, long long n_seg,
                                    long long seg_len, int span, long long out_len,
                                    u32* __restrict__ out, const u32* __restrict__ K,
                                    u32 np0) {
    const Grp g = grp_make();
    const long long gi = grp_index();
    if (gi >= n_seg * out_len) return;
    const long long m = gi / out_len, j = gi % out_len;
    const long long lo = j * span;
    long long hi = lo + span;
    if (hi > seg_len) hi = seg_len;
    const u32* __restrict__ row = in + m * seg_len * NL;
    u32 n[LPT], x[LPT], acc[LPT];
    grp_load_full(n, KROW(K, K_N), g);
    grp_load_full(acc, row + lo * NL, g);
#pragma unroll 1
    for (long long k = lo + 1; k < hi; ++k) {
        grp_load_full(x, row + k * NL, g);
        mont_mul(acc, acc, x, n, np0, g);
    }
    grp_store(out + gi * NL, acc, NL, g);
}

// Shift-and-pack (cipher compression): out[m] = prod_j in[m][j]^(2^(shift*j)), computed
// Horner-style from the top slot down with `shift` squarings per slot, so that the
// decrypted value is sum_j m_j * 2^(shift*j).  Montgomery form in and out.
extern "C" __global__ void k_shift_pack(const u32* __restrict__ in, long long n_out,
                                        int slots, int shift, u32* __restrict__ out,
                                        const u32* __restrict__ K, u32 np0) {
    const Grp g = grp_make();
    const long long m = grp_index();
    if (m >= n_out) return;
    const u32* __restrict__ row = in + m * (long long)slots * NL;
    u32 n[LPT], acc[LPT], y[LPT];
    grp_load_full(n, KROW(K, K_N), g);
    grp_load_full(acc, row + (long long)(slots - 1) * NL, g);
    const int steps = (slots - 1) * (shift + 1);
#pragma unroll 1
    for (int s = 0; s < steps; ++s) {
        const int j = slots - 2 - s / (shift + 1);
        if (s % (shift + 1) < shift) {
            grp_copy(y, acc);
        } else {
            grp_load_full(y, row + (long long)j * NL, g);
        }
        mont_mul(acc, acc, y, n, np0, g);
    }
    grp_store(out + m * NL, acc, NL, g);
}
