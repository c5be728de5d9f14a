// Host emulation of the few CUDA features hefl's kernels use, for tests on machines
// without a GPU (tests/gpu/emu/cupy_emu.py compiles the kernel sources with g++ and this
// header).  Each lane of a group is an OS thread; warp shuffles and ballots exchange
// values through a per-group slot array between two barrier phases.  The group mask that
// the kernels pass is checked, so a wrong mask aborts instead of passing silently.
//
// Not a CUDA simulator: no shared memory, no __syncthreads, one group = TPI threads.
#pragma once
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#define __device__
#define __global__
#define __forceinline__ inline

struct emu_dim3 {
    unsigned x = 0, y = 0, z = 0;
};
thread_local emu_dim3 threadIdx, blockIdx, blockDim;
thread_local unsigned int hefl_emu_cc = 0;

struct EmuGroup {
    std::barrier<> bar;
    unsigned slot[32];
    explicit EmuGroup(int n) : bar(n) {}
};
thread_local EmuGroup* emu_grp = nullptr;

static inline unsigned emu_lane() { return threadIdx.x & 31u; }

static inline void emu_check(unsigned mask, int width) {
    const unsigned lane = emu_lane();
    const unsigned base = lane & ~(unsigned)(HEFL_TPI - 1);
    const unsigned want =
        (HEFL_TPI == 32) ? 0xffffffffu : (((1u << HEFL_TPI) - 1u) << base);
    if (mask != want || (width != 0 && width != HEFL_TPI)) {
        std::fprintf(stderr, "emu: bad mask %08x (want %08x) or width %d\n", mask, want, width);
        std::abort();
    }
}

static inline unsigned __shfl_sync(unsigned mask, unsigned v, int src, int width) {
    emu_check(mask, width);
    const unsigned lane = emu_lane(), base = lane & ~(unsigned)(width - 1);
    emu_grp->slot[lane] = v;
    emu_grp->bar.arrive_and_wait();
    const unsigned r = emu_grp->slot[base + ((unsigned)src % (unsigned)width)];
    emu_grp->bar.arrive_and_wait();
    return r;
}

static inline unsigned __shfl_down_sync(unsigned mask, unsigned v, unsigned d, int width) {
    emu_check(mask, width);
    const unsigned lane = emu_lane(), base = lane & ~(unsigned)(width - 1);
    emu_grp->slot[lane] = v;
    emu_grp->bar.arrive_and_wait();
    const unsigned src = lane - base + d;
    const unsigned r = src < (unsigned)width ? emu_grp->slot[base + src] : v;
    emu_grp->bar.arrive_and_wait();
    return r;
}

static inline unsigned __shfl_up_sync(unsigned mask, unsigned v, unsigned d, int width) {
    emu_check(mask, width);
    const unsigned lane = emu_lane(), base = lane & ~(unsigned)(width - 1);
    emu_grp->slot[lane] = v;
    emu_grp->bar.arrive_and_wait();
    const int src = (int)(lane - base) - (int)d;
    const unsigned r = src >= 0 ? emu_grp->slot[base + src] : v;
    emu_grp->bar.arrive_and_wait();
    return r;
}

static inline unsigned __ballot_sync(unsigned mask, int pred) {
    emu_check(mask, 0);
    const unsigned lane = emu_lane();
    emu_grp->slot[lane] = pred ? 1u : 0u;
    emu_grp->bar.arrive_and_wait();
    unsigned bits = 0;
    for (unsigned l = 0; l < 32; ++l)
        if ((mask >> l) & 1u) bits |= emu_grp->slot[l] << l;
    emu_grp->bar.arrive_and_wait();
    return bits;
}

typedef unsigned long long emu_u64;
typedef void (*emu_fn20)(emu_u64, emu_u64, emu_u64, emu_u64, emu_u64, emu_u64, emu_u64,
                         emu_u64, emu_u64, emu_u64, emu_u64, emu_u64, emu_u64, emu_u64,
                         emu_u64, emu_u64, emu_u64, emu_u64, emu_u64, emu_u64);

// Runs fn(args...) on grid*block emulated threads, `par` groups at a time.  All kernel
// parameters are integers or pointers, so on x86-64 SysV each travels in one 64-bit slot
// and the call through a 20-argument function type reaches the right parameters.
extern "C" int emu_launch(void* fn, unsigned grid, unsigned block, int nargs,
                          const emu_u64* args, int par) {
    if (nargs > 20) return -1;
    emu_u64 a[20] = {0};
    for (int i = 0; i < nargs; ++i) a[i] = args[i];
    const emu_fn20 f = (emu_fn20)fn;
    const long long groups = (long long)grid * block / HEFL_TPI;
    for (long long g0 = 0; g0 < groups; g0 += par) {
        const long long g1 = (g0 + par < groups) ? g0 + par : groups;
        std::vector<std::unique_ptr<EmuGroup>> gs;
        std::vector<std::thread> th;
        for (long long g = g0; g < g1; ++g) {
            gs.emplace_back(new EmuGroup(HEFL_TPI));
            EmuGroup* grp = gs.back().get();
            for (int lane = 0; lane < HEFL_TPI; ++lane) {
                th.emplace_back([=]() {
                    const long long t = g * HEFL_TPI + lane;
                    threadIdx.x = (unsigned)(t % block);
                    blockIdx.x = (unsigned)(t / block);
                    blockDim.x = block;
                    emu_grp = grp;
                    hefl_emu_cc = 0;
                    f(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11],
                      a[12], a[13], a[14], a[15], a[16], a[17], a[18], a[19]);
                });
            }
        }
        for (auto& t : th) t.join();
    }
    return 0;
}
