// hefl/gpu/crt.cu — CRT decryption kernels (modulo p^2, q^2 and n).
//
// Compiled with -DHEFL_NL=<limbs of max(p^2, q^2, n)> -DHEFL_TPI=<lanes per number>.
// Decryption of c (a number mod n^2, given as up to 2*NL limbs):
//   mp = L_p(c^(p-1) mod p^2) * hp mod p,  L_p(x) = (x - 1) / p,
//   mq likewise, and m = mp*Q + mq*P mod n with Q = q*(q^-1 mod p), P = p*(p^-1 mod q).
// The exact division (x - 1) / p is a low-half product with p^-1 mod 2^(32*NL), since the
// quotient is known to be < p.
//
// Per-prime constant rows (KP, shape (2, KP_ROWS, NL); see hefl/gpu/backend.py):
#include "mont.cuh"

#define KP_P2 0    // p^2
#define KP_R1 1    // R mod p^2 (Montgomery one)
#define KP_R2 2    // R^2 mod p^2
#define KP_R3 3    // R^3 mod p^2
#define KP_ONE 4   // 1
#define KP_P 5     // p
#define KP_HPR 6   // hp * R mod p
#define KP_PINV 7  // p^-1 mod R
#define KP_EXP 8   // p - 1
#define KP_ROWS 9

// KN rows (shape (3, NL)): n, Q*R mod n, P*R mod n.
#define KN_N 0
#define KN_QR 1
#define KN_PR 2

// out[pr][i] = m mod p_pr for pr in {0: p, 1: q}; groups 0..count-1 do p, count..2count-1 q.
// np0s[2*pr] = -(p^2)^-1 mod 2^32, np0s[2*pr+1] = -p^-1 mod 2^32.
extern "C" __global__ void k_decrypt_half(const u32* __restrict__ c, int c_words,
                                          long long count, const u32* __restrict__ KP,
                                          const u32* __restrict__ np0s, int exp_bits_p,
                                          int exp_bits_q, u32* __restrict__ out) {
    const Grp g = grp_make();
    const long long gi = grp_index();
    if (gi >= 2 * count) return;
    const int pr = (int)(gi / count);
    const long long i = gi % count;
    const u32* __restrict__ K = KP + (long long)pr * KP_ROWS * NL;
    const u32 np0 = np0s[2 * pr];
    const u32 np0p = np0s[2 * pr + 1];
    const int e_bits = pr ? exp_bits_q : exp_bits_p;

    u32 n[LPT], x[LPT], y[LPT], z[LPT];
    grp_load_full(n, K + KP_P2 * NL, g);
    // Montgomery form of c mod p^2 without a long division: with c = hi*R + lo,
    // c*R = montmul(hi, R^3) + montmul(lo, R^2) mod p^2 (both operands below R).
    const u32* __restrict__ row = c + i * c_words;
    grp_load(x, row + NL, c_words - NL, g);
    grp_load_full(y, K + KP_R3 * NL, g);
    mont_mul(x, x, y, n, np0, g);
    grp_load(z, row, c_words < NL ? c_words : NL, g);
    grp_load_full(y, K + KP_R2 * NL, g);
    mont_mul(z, z, y, n, np0, g);
    grp_modadd(x, x, z, n, g);

    // x = c^(p-1) mod p^2 (Montgomery), then plain
    grp_load_full(y, K + KP_R1 * NL, g);
    mont_pow(x, x, K + KP_EXP * NL, NL, e_bits, y, n, np0, g);
    grp_load_full(y, K + KP_ONE * NL, g);
    mont_mul(x, x, y, n, np0, g);

    // L = (x - 1) / p exactly, then mp = L * hp mod p
    grp_sub(x, x, y, g);
    grp_load_full(y, K + KP_PINV * NL, g);
    grp_mullo(z, x, y, g);
    grp_load_full(n, K + KP_P * NL, g);
    grp_load_full(y, K + KP_HPR * NL, g);
    mont_mul(z, z, y, n, np0p, g);
    grp_store(out + ((long long)pr * count + i) * NL, z, NL, g);
}

// m[i] = mp[i] * Q + mq[i] * P mod n  (Q*R, P*R precomputed so montmul gives plain values).
extern "C" __global__ void k_crt(const u32* __restrict__ mpq, long long count,
                                 const u32* __restrict__ KN, u32 np0n, u32* __restrict__ out,
                                 int out_words) {
    const Grp g = grp_make();
    const long long i = grp_index();
    if (i >= count) return;
    u32 n[LPT], a[LPT], b[LPT], y[LPT];
    grp_load_full(n, KN + KN_N * NL, g);
    grp_load_full(a, mpq + i * NL, g);
    grp_load_full(b, mpq + (count + i) * NL, g);
    grp_load_full(y, KN + KN_QR * NL, g);
    mont_mul(a, a, y, n, np0n, g);
    grp_load_full(y, KN + KN_PR * NL, g);
    mont_mul(b, b, y, n, np0n, g);
    grp_modadd(a, a, b, n, g);
    grp_store(out + i * out_words, a, out_words < NL ? out_words : NL, g);
}
