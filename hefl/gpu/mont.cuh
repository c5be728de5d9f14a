// hefl/gpu/mont.cuh — cooperative (CGBN-style) multi-precision Montgomery arithmetic.
//
// One big number of NL 32-bit limbs is held by a *group* of TPI consecutive lanes of a
// warp; lane j of the group holds limbs [j*LPT, (j+1)*LPT) (LPT = NL / TPI) in
// registers, little-endian.  Every routine here is executed by all TPI lanes of a group
// together; groups never straddle a warp, and every warp-level intrinsic uses the
// group's own lane mask, so different groups of one warp may branch independently.
//
// Montgomery multiplication is CIOS (coarsely integrated operand scanning) with the
// accumulator T distributed over the group.  The one subtle point is carries: a full
// carry propagation across lanes in every one of the NL iterations would serialise the
// group, so each lane keeps the carry out of its top limb in a small extra word `c`
// that sits *at the lane boundary* (bit position 32*(j+1)*LPT).  Because every
// iteration shifts T right by one limb, that word is folded into the limb that lane j
// receives from lane j+1 during the shift, and stays below 4.  Limb 0 of lane 0 is
// therefore always exact, which is all the quotient digit q needs.  The carries are
// resolved once at the end with a carry-lookahead over the group (two ballots and one
// 64-bit add), followed by the final conditional subtraction.
//
// hefl/gpu/reference.py is a NumPy model of exactly these steps (same lanes, same carry
// words, same lookahead) that the CPU test-suite checks against gmpy2.
//
// Compile-time configuration: HEFL_NL (limbs per number) and HEFL_TPI (lanes per
// number, a power of two <= 32 dividing HEFL_NL).  NVRTC has no standard headers, so
// the integer types are declared here.
#pragma once

#ifndef HEFL_NL
#define HEFL_NL 128
#endif
#ifndef HEFL_TPI
#define HEFL_TPI 8
#endif

typedef unsigned int u32;
typedef unsigned long long u64;

#define NL HEFL_NL
#define TPI HEFL_TPI
#define LPT (NL / TPI)

static_assert(TPI == 1 || TPI == 2 || TPI == 4 || TPI == 8 || TPI == 16 || TPI == 32,
              "HEFL_TPI must be a power of two <= 32");
static_assert(NL % TPI == 0, "HEFL_NL must be a multiple of HEFL_TPI");

// ---------------------------------------------------------------------------------
// PTX carry-chain primitives.  A chain of *.cc instructions must not be interrupted by
// anything that writes the carry flag; the asm statements are volatile so the compiler
// keeps their order, and nothing between them touches CC.
// ---------------------------------------------------------------------------------
#ifdef HEFL_HOST_EMU
// Host emulation (tests/gpu/emu): the same carry-chain semantics in C, with the carry flag
// in a thread-local variable.  Never used on a GPU.
extern thread_local u32 hefl_emu_cc;
__device__ __forceinline__ u32 mad_lo_cc(u32 a, u32 b, u32 c) {
    const u64 s = (u64)(u32)(a * b) + c;
    hefl_emu_cc = (u32)(s >> 32);
    return (u32)s;
}
__device__ __forceinline__ u32 madc_lo_cc(u32 a, u32 b, u32 c) {
    const u64 s = (u64)(u32)(a * b) + c + hefl_emu_cc;
    hefl_emu_cc = (u32)(s >> 32);
    return (u32)s;
}
__device__ __forceinline__ u32 mad_hi_cc(u32 a, u32 b, u32 c) {
    const u64 s = (((u64)a * b) >> 32) + c;
    hefl_emu_cc = (u32)(s >> 32);
    return (u32)s;
}
__device__ __forceinline__ u32 madc_hi_cc(u32 a, u32 b, u32 c) {
    const u64 s = (((u64)a * b) >> 32) + c + hefl_emu_cc;
    hefl_emu_cc = (u32)(s >> 32);
    return (u32)s;
}
__device__ __forceinline__ u32 madc_hi(u32 a, u32 b, u32 c) {
    return (u32)((((u64)a * b) >> 32) + c + hefl_emu_cc);
}
__device__ __forceinline__ u32 addc_zero() { return hefl_emu_cc; }
#else
__device__ __forceinline__ u32 mad_lo_cc(u32 a, u32 b, u32 c) {
    u32 r;
    asm volatile("mad.lo.cc.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
__device__ __forceinline__ u32 madc_lo_cc(u32 a, u32 b, u32 c) {
    u32 r;
    asm volatile("madc.lo.cc.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
__device__ __forceinline__ u32 mad_hi_cc(u32 a, u32 b, u32 c) {
    u32 r;
    asm volatile("mad.hi.cc.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
__device__ __forceinline__ u32 madc_hi_cc(u32 a, u32 b, u32 c) {
    u32 r;
    asm volatile("madc.hi.cc.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
__device__ __forceinline__ u32 madc_hi(u32 a, u32 b, u32 c) {
    u32 r;
    asm volatile("madc.hi.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
__device__ __forceinline__ u32 addc_zero() {
    u32 r;
    asm volatile("addc.u32 %0, 0, 0;" : "=r"(r));
    return r;
}

#endif  // HEFL_HOST_EMU

// t[0..LPT) += x * y[0..LPT); returns the overflow limb (< 2^32).  Low halves of the
// products go down one carry chain, high halves (one limb up) down a second one: two
// IMADs per limb product instead of a 64-bit multiply-add plus carry handling.
__device__ __forceinline__ u32 mac_row(u32 t[LPT], u32 x, const u32 y[LPT]) {
    u32 ex;
    if (LPT == 1) {
        t[0] = mad_lo_cc(x, y[0], t[0]);
        ex = madc_hi(x, y[0], 0u);
        return ex;
    }
    t[0] = mad_lo_cc(x, y[0], t[0]);
#pragma unroll
    for (int k = 1; k < LPT; ++k) t[k] = madc_lo_cc(x, y[k], t[k]);
    ex = addc_zero();
    t[1] = mad_hi_cc(x, y[0], t[1]);
#pragma unroll
    for (int k = 1; k < LPT - 1; ++k) t[k + 1] = madc_hi_cc(x, y[k], t[k + 1]);
    ex = madc_hi(x, y[LPT - 1], ex);
    return ex;
}

// ---------------------------------------------------------------------------------
// Group bookkeeping
// ---------------------------------------------------------------------------------
struct Grp {
    u32 lane;  // 0..TPI-1 inside the group
    u32 base;  // first lane of the group inside the warp
    u32 mask;  // the group's lanes, for the *_sync intrinsics
};

__device__ __forceinline__ Grp grp_make() {
    Grp g;
    const u32 lid = threadIdx.x & 31u;
    g.lane = lid & (TPI - 1u);
    g.base = lid - g.lane;
    g.mask = (TPI == 32) ? 0xffffffffu : (((1u << TPI) - 1u) << g.base);
    return g;
}

// Index of the number this group works on.
__device__ __forceinline__ long long grp_index() {
    return ((long long)blockIdx.x * blockDim.x + threadIdx.x) / TPI;
}

// Carry-lookahead over the group.  Lane j generates a carry (gen) or propagates an
// incoming one (prop, exclusive with gen).  Returns the carry into this lane and, in
// `top`, the carry out of the whole group.  With A = G|P and B = G, the carry into bit
// j of A + B is exactly carry_in(j) of the lanes (A_j&B_j = G_j, A_j^B_j = P_j).
__device__ __forceinline__ u32 grp_lookahead(bool gen, bool prop, const Grp& g, u32& top) {
    const u64 sel = (TPI == 32) ? 0xffffffffull : ((1ull << TPI) - 1ull);
    const u64 G = ((u64)__ballot_sync(g.mask, gen) >> g.base) & sel;
    const u64 P = ((u64)__ballot_sync(g.mask, prop) >> g.base) & sel;
    const u64 A = G | P;
    const u64 S = A + G;
    const u64 cv = S ^ A ^ G;
    top = (u32)((S >> TPI) & 1ull);
    return (u32)((cv >> g.lane) & 1ull);
}

// ---------------------------------------------------------------------------------
// Loads and stores (a row of `words` limbs; missing high limbs read as zero)
// ---------------------------------------------------------------------------------
__device__ __forceinline__ void grp_load(u32 x[LPT], const u32* __restrict__ src, int words,
                                         const Grp& g) {
#pragma unroll
    for (int k = 0; k < LPT; ++k) {
        const int idx = (int)g.lane * LPT + k;
        x[k] = (idx < words) ? src[idx] : 0u;
    }
}

__device__ __forceinline__ void grp_load_full(u32 x[LPT], const u32* __restrict__ src,
                                              const Grp& g) {
#pragma unroll
    for (int k = 0; k < LPT; ++k) x[k] = src[g.lane * LPT + k];
}

__device__ __forceinline__ void grp_store(u32* __restrict__ dst, const u32 x[LPT], int words,
                                          const Grp& g) {
#pragma unroll
    for (int k = 0; k < LPT; ++k) {
        const int idx = (int)g.lane * LPT + k;
        if (idx < words) dst[idx] = x[k];
    }
}

__device__ __forceinline__ void grp_copy(u32 r[LPT], const u32 x[LPT]) {
#pragma unroll
    for (int k = 0; k < LPT; ++k) r[k] = x[k];
}

// ---------------------------------------------------------------------------------
// Addition / subtraction / conditional reduction
// ---------------------------------------------------------------------------------

// r = a + b over NL limbs; returns the carry out of the top limb (same in all lanes).
__device__ __forceinline__ u32 grp_add(u32 r[LPT], const u32 a[LPT], const u32 b[LPT],
                                       const Grp& g) {
    u64 s = 0;
    bool allff = true;
#pragma unroll
    for (int k = 0; k < LPT; ++k) {
        s = (u64)a[k] + b[k] + (s >> 32);
        r[k] = (u32)s;
        allff = allff && (r[k] == 0xffffffffu);
    }
    u32 top;
    const u32 ci = grp_lookahead((s >> 32) != 0ull, allff, g, top);
    s = ci;
#pragma unroll
    for (int k = 0; k < LPT; ++k) {
        s += r[k];
        r[k] = (u32)s;
        s >>= 32;
    }
    return top;
}

// r = a - b over NL limbs; returns the borrow out of the top limb (same in all lanes).
__device__ __forceinline__ u32 grp_sub(u32 r[LPT], const u32 a[LPT], const u32 b[LPT],
                                       const Grp& g) {
    u32 bw = 0;
    bool allz = true;
#pragma unroll
    for (int k = 0; k < LPT; ++k) {
        const u64 d = (u64)a[k] - b[k] - bw;
        r[k] = (u32)d;
        bw = (u32)(d >> 63);
        allz = allz && (r[k] == 0u);
    }
    u32 top;
    u32 bi = grp_lookahead(bw != 0u, allz, g, top);
#pragma unroll
    for (int k = 0; k < LPT; ++k) {
        const u64 d = (u64)r[k] - bi;
        r[k] = (u32)d;
        bi = (u32)(d >> 63);
    }
    return top;
}

// r = (extra*2^(32NL) + t) mod n, for a value known to be < 2n.  Branch-free select.
__device__ __forceinline__ void grp_reduce_once(u32 r[LPT], const u32 t[LPT], u32 extra,
                                                const u32 n[LPT], const Grp& g) {
    u32 d[LPT];
    const u32 bo = grp_sub(d, t, n, g);
    const bool use = (extra != 0u) || (bo == 0u);
#pragma unroll
    for (int k = 0; k < LPT; ++k) r[k] = use ? d[k] : t[k];
}

// r = (a + b) mod n for a, b < n.
__device__ __forceinline__ void grp_modadd(u32 r[LPT], const u32 a[LPT], const u32 b[LPT],
                                           const u32 n[LPT], const Grp& g) {
    u32 s[LPT];
    const u32 top = grp_add(s, a, b, g);
    grp_reduce_once(r, s, top, n, g);
}

// ---------------------------------------------------------------------------------
// Montgomery multiplication: r = a * b * 2^(-32 NL) mod n.
// Needs n odd, b < n, a < 2^(32 NL); np0 = -n^(-1) mod 2^32.  r < n.  r may alias a or b.
// ---------------------------------------------------------------------------------
__device__ __forceinline__ void mont_mul(u32 r[LPT], const u32 a[LPT], const u32 b[LPT],
                                         const u32 n[LPT], u32 np0, const Grp& g) {
    u32 t[LPT];
#pragma unroll
    for (int k = 0; k < LPT; ++k) t[k] = 0u;
    u32 c = 0u;  // carry word at bit position 32*(lane+1)*LPT

#pragma unroll 1
    for (int src = 0; src < TPI; ++src) {
#pragma unroll
        for (int w = 0; w < LPT; ++w) {
            // limb i = src*LPT + w of a, broadcast from the lane that holds it
            const u32 ai = __shfl_sync(g.mask, a[w], src, TPI);
            const u32 cA = mac_row(t, ai, b);          // T += a_i * b
            const u32 q = __shfl_sync(g.mask, t[0] * np0, 0, TPI);
            const u32 cB = mac_row(t, q, n);           // T += q * n, limb 0 of lane 0 -> 0
            // shift right by one limb: lane j takes lane j+1's limb 0 as its new top
            // limb, plus its own carry words (which sit exactly at that position now)
            u32 recv = __shfl_down_sync(g.mask, t[0], 1, TPI);
            if (g.lane == TPI - 1) recv = 0u;
#pragma unroll
            for (int k = 0; k < LPT - 1; ++k) t[k] = t[k + 1];
            const u64 s = (u64)recv + cA + cB + c;
            t[LPT - 1] = (u32)s;
            c = (u32)(s >> 32);
        }
    }

    // resolve the lane-boundary carry words: lane j's word belongs to lane j+1's limb 0;
    // the top lane's word is the (NL)th limb of T.
    u32 cin = __shfl_up_sync(g.mask, c, 1, TPI);
    if (g.lane == 0) cin = 0u;
    u32 extra = __shfl_sync(g.mask, c, TPI - 1, TPI);
    u64 s = cin;
    bool allff = true;
#pragma unroll
    for (int k = 0; k < LPT; ++k) {
        s += t[k];
        t[k] = (u32)s;
        s >>= 32;
        allff = allff && (t[k] == 0xffffffffu);
    }
    u32 top;
    const u32 ci = grp_lookahead(s != 0ull, allff, g, top);
    s = ci;
#pragma unroll
    for (int k = 0; k < LPT; ++k) {
        s += t[k];
        t[k] = (u32)s;
        s >>= 32;
    }
    extra += top;
    grp_reduce_once(r, t, extra, n, g);  // T < 2n
}

// r = a * b mod 2^(32 NL) (the low half of the product), same lane scheme: the limb that
// the shift pushes out of lane 0 in iteration i is exactly limb i of the product.
__device__ __forceinline__ void grp_mullo(u32 r[LPT], const u32 a[LPT], const u32 b[LPT],
                                          const Grp& g) {
    u32 t[LPT];
#pragma unroll
    for (int k = 0; k < LPT; ++k) {
        t[k] = 0u;
        r[k] = 0u;
    }
    u32 c = 0u;
#pragma unroll 1
    for (int src = 0; src < TPI; ++src) {
#pragma unroll
        for (int w = 0; w < LPT; ++w) {
            const u32 ai = __shfl_sync(g.mask, a[w], src, TPI);
            const u32 cA = mac_row(t, ai, b);
            const u32 out = __shfl_sync(g.mask, t[0], 0, TPI);
            if (g.lane == (u32)src) r[w] = out;
            u32 recv = __shfl_down_sync(g.mask, t[0], 1, TPI);
            if (g.lane == TPI - 1) recv = 0u;
#pragma unroll
            for (int k = 0; k < LPT - 1; ++k) t[k] = t[k + 1];
            const u64 s = (u64)recv + cA + c;
            t[LPT - 1] = (u32)s;
            c = (u32)(s >> 32);
        }
    }
}

// Bits [bit, bit+width) of a little-endian word array (width <= 16), zero beyond `words`.
// All lanes of a group read the same address, so this is one broadcast load.
__device__ __forceinline__ u32 get_bits(const u32* __restrict__ e, int words, int bit,
                                        int width) {
    const int wi = bit >> 5;
    const int sh = bit & 31;
    u64 v = (wi < words) ? (u64)e[wi] : 0ull;
    if (wi + 1 < words) v |= (u64)e[wi + 1] << 32;
    return (u32)(v >> sh) & ((1u << width) - 1u);
}

#ifndef HEFL_POW_W
#define HEFL_POW_W 5
#endif

// Fixed-window exponentiation in the Montgomery domain: r = x^e (x, r in Montgomery
// form, `one` = R mod n).  The window table lives in thread-local memory (indexed at run
// time), and every window does W squarings and one multiplication, also for a zero digit
// (by `one`), so the sequence of operations does not depend on the exponent's digits.
// All multiplications go through a single inlined mont_mul call site to keep the
// instruction footprint small.
__device__ __forceinline__ void mont_pow(u32 r[LPT], const u32 x[LPT],
                                         const u32* __restrict__ e, int e_words, int e_bits,
                                         const u32 one[LPT], const u32 n[LPT], u32 np0,
                                         const Grp& g) {
    const int W = HEFL_POW_W;
    const int TS = 1 << W;
    u32 tbl[TS][LPT];
    u32 acc[LPT], b[LPT];
    grp_copy(tbl[0], one);
    grp_copy(tbl[1], x);
    grp_copy(acc, x);
    // table: tbl[d] = x^d, d = 2..TS-1
#pragma unroll 1
    for (int d = 2; d < TS; ++d) {
        mont_mul(acc, acc, x, n, np0, g);
        grp_copy(tbl[d], acc);
    }
    if (e_bits <= 0) {
        grp_copy(r, one);
        return;
    }
    const int nwin = (e_bits + W - 1) / W;
    const u32 d0 = get_bits(e, e_words, (nwin - 1) * W, W);
#pragma unroll
    for (int k = 0; k < LPT; ++k) acc[k] = tbl[d0][k];
    const int steps = (nwin - 1) * (W + 1);
#pragma unroll 1
    for (int s = 0; s < steps; ++s) {
        const int win = nwin - 2 - s / (W + 1);
        const int sub = s % (W + 1);
        if (sub < W) {
            grp_copy(b, acc);
        } else {
            const u32 d = get_bits(e, e_words, win * W, W);
#pragma unroll
            for (int k = 0; k < LPT; ++k) b[k] = tbl[d][k];
        }
        mont_mul(acc, acc, b, n, np0, g);
    }
    grp_copy(r, acc);
}
