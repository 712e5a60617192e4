// ECA CUDA kernels: a fused single-pass path and a two-pass path (pool, then gate + scale).
//
// Fused: one block owns a tile of channels of one image. It copies the tile and its (k-1)/2 halo channels on each side
// from global into shared memory, pools them there, computes the tile's gates and writes Y from shared memory, so X
// is read from device memory once (plus the halo). Two-pass: pool every channel into a float workspace (a group of
// threads per channel, block-level reduction, no atomics; H*W split over several blocks when there are too few channels
// for the SMs), then a second kernel computes the gates and scales X into Y. Both apply the op's bias, padding and gate
// in the gate, and the residual and activation where Y is written. The choice of path, grid and block is planLaunch()
// below; docs/plugin.md states the rule with byte counts.

#include "eca_kernels.h"

#define ECA_STR2(x) #x
#define ECA_STR(x) ECA_STR2(x)

// ECA_QDP_ONLY: the device code alone, for the PTX of TensorRT's ahead-of-time plugin (always with NVRTC; nvcc gets
// -DECA_QDP_ONLY): its two entry points, none of the C++ plugin's kernels.
#if defined(__CUDACC_RTC__) && !defined(ECA_QDP_ONLY)
#define ECA_QDP_ONLY
#endif

#if defined(ECA_QDP_ONLY)
#include <cuda_fp16.h>
#elif defined(__CUDACC__)
#include <cuda_fp16.h>
#include <cuda_runtime.h>
// The launch and the dynamic shared memory, written once for the GPU and for the host execution below.
#define ECA_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#define ECA_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#define ECA_CUDA_VERSION ECA_STR(__CUDACC_VER_MAJOR__) "." ECA_STR(__CUDACC_VER_MINOR__)
#else // a host C++ compiler: the same kernels on the CPU for tests (host/cuda_host_exec.h, docs/plugin.md)
#include "host/cuda_host_exec.h"
#define ECA_LAUNCH(kernel, grid, block, smem, stream, ...)                                                          \
    ::cuda_host::launch(kernel, grid, block, smem, stream, __VA_ARGS__)
#define ECA_DYNAMIC_SHARED(name) unsigned char* const name = ::cuda_host::dynamicShared()
#define ECA_CUDA_VERSION "host"
#endif

#if !defined(ECA_QDP_ONLY)
#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <utility>
#endif

#ifndef ECA_CUDA_ARCHS
#define ECA_CUDA_ARCHS "unknown"
#endif

namespace
{

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxRowsPerBlock = 256;      // two-pass: channels per block (their gates in static smem)
constexpr int kMaxPartials = 256;          // two-pass: rows x slots partial sums per block (static smem)
constexpr int kMaxDevices = 64;            // devices whose limits are cached
constexpr size_t kDefaultSmem = 48 << 10;  // dynamic shared memory a block gets without opting in
constexpr int64_t kMinSplitElements = 1024; // two-pass: H*W elements a block handles at least when channels are split
constexpr int64_t kMaxSplitPartials = 16384; // two-pass: channels x splits partial means at most (the workspace bound)

struct EcaParams
{
    float w[ECA_MAX_K];
    int32_t k;
    int32_t channels;
    int32_t hw;
    float invHw;
    float bias;
    int32_t padding;    // eca_padding_t
    int32_t gate;       // eca_gate_t
    int32_t activation; // eca_activation_t
};

// V elements of T moved by one memory access.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack
{
    T v[V];
};

__device__ __forceinline__ float toFloat(float v) { return v; }
__device__ __forceinline__ float toFloat(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v) { return __float2half_rn(v); }

template <typename T, int V>
__device__ __forceinline__ float packSum(Pack<T, V> const& p)
{
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i)
        s += toFloat(p.v[i]);
    return s;
}

// One output pack: act(x * g + r), in float32, rounded once; r is the residual pack, added if hasResidual. Packs go
// by value and every lane index is a compile-time constant, so they stay in registers.
template <typename T, int V>
__device__ __forceinline__ Pack<T, V> packOut(Pack<T, V> p, float g, Pack<T, V> r, bool hasResidual, bool relu)
{
#pragma unroll
    for (int i = 0; i < V; ++i)
    {
        float v = toFloat(p.v[i]) * g;
        if (hasResidual)
            v += toFloat(r.v[i]);
        p.v[i] = fromFloat<T>(relu ? fmaxf(v, 0.f) : v);
    }
    return p;
}

// Gate of channel c; mean(i) gives the mean of channel i for every i in [0, C) the window touches.
template <typename MeanFn>
__device__ __forceinline__ float channelGate(EcaParams const& p, int c, MeanFn mean)
{
    int const half = p.k / 2;
    float s = p.bias;
    if (p.padding == ECA_PADDING_CIRCULAR)
    {
        for (int j = 0; j < p.k; ++j)
        {
            int i = (c + j - half) % p.channels;
            s += p.w[j] * mean(i < 0 ? i + p.channels : i);
        }
    }
    else
    {
        int const j0 = max(0, half - c);
        int const j1 = min(p.k, p.channels - c + half);
        for (int j = j0; j < j1; ++j)
            s += p.w[j] * mean(c + j - half);
    }
    if (p.gate == ECA_GATE_HARD_SIGMOID)
        return fminf(fmaxf(s / 6.f + 0.5f, 0.f), 1.f);
    return 1.f / (1.f + expf(-s));
}

// Groups of G threads (a power of two, 1 to kThreads) work on one channel (a row of H*W elements) at a time. A group
// wider than a warp spans G/32 warps, each of which leaves one partial sum ("slot") per row. The block (blockDim.x, a
// multiple of 32 and of G) holds blockDim.x / G groups: the two-pass launches size it to the rows it has.
struct Groups
{
    int size, rank, index, count, slots, slot;

    __device__ explicit Groups(int groupSize)
    {
        size = groupSize;
        rank = threadIdx.x % groupSize;
        index = threadIdx.x / groupSize;
        count = int(blockDim.x) / groupSize;
        slots = max(1, groupSize / 32);
        slot = rank / 32;
    }
};

// Per-row sums of `count` packs of `rows` rows (row r starts at src + r * stride) into sums[row * slots + slot].
// The loop is uniform across the block, so every lane reaches the shuffles.
template <typename T, int V>
__device__ __forceinline__ void sumRows(
    Pack<T, V> const* src, int rows, int64_t stride, int count, Groups const& g, float* sums)
{
    for (int base = 0; base < rows; base += g.count)
    {
        int const r = base + g.index;
        float s = 0.f;
        if (r < rows)
        {
            Pack<T, V> const* row = src + r * stride;
            int i = g.rank;
            for (; i + 3 * g.size < count; i += 4 * g.size) // four vector loads in flight, in named registers
            {
                Pack<T, V> const a = row[i], b = row[i + g.size], c = row[i + 2 * g.size], d = row[i + 3 * g.size];
                s += (packSum(a) + packSum(b)) + (packSum(c) + packSum(d));
            }
            for (; i < count; i += g.size)
                s += packSum(row[i]);
        }
        // A fixed, unrolled sequence that every lane runs (the group width only masks the sums): no divergent loop
        // around the shuffles, whose reconvergence state ptxas would otherwise keep in local memory.
        int const width = min(g.size, 32);
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1)
        {
            float const other = __shfl_xor_sync(0xffffffffu, s, offset);
            s += offset < width ? other : 0.f;
        }
        if (r < rows && g.rank % 32 == 0)
            sums[r * g.slots + g.slot] = s;
    }
}

__device__ __forceinline__ float rowMean(float const* sums, int r, int slots, float invHw)
{
    float s = 0.f;
    for (int i = 0; i < slots; ++i)
        s += sums[r * slots + i];
    return s * invHw;
}

// Block-wide copy of `total` packs, kUnroll loads in flight per thread before their stores.
template <int kUnroll, typename P>
__device__ __forceinline__ void copyToShared(P const* __restrict__ src, P* dst, int total)
{
    int const step = int(blockDim.x);
    int i = threadIdx.x;
    for (; i + (kUnroll - 1) * step < total; i += kUnroll * step)
    {
        P v[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
            v[u] = src[i + u * step];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
            dst[i + u * step] = v[u];
    }
    for (; i < total; i += step)
        dst[i] = src[i];
}

// One row scaled by `gate` (plus the residual row `res` if not null, then relu), kUnroll loads in flight per thread
// before their stores (which keeps it correct in place, and with `to` == `res`).
template <int kUnroll, typename P>
__device__ __forceinline__ void scaleRow(P const* from, P const* res, P* to, float gate, bool relu, int packs,
    Groups const& g)
{
    bool const hasResidual = res != nullptr;
    int i = g.rank;
    for (; i + (kUnroll - 1) * g.size < packs; i += kUnroll * g.size)
    {
        P v[kUnroll], r[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
        {
            v[u] = from[i + u * g.size];
            r[u] = hasResidual ? res[i + u * g.size] : P{};
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
            to[i + u * g.size] = packOut(v[u], gate, r[u], hasResidual, relu);
    }
    for (; i < packs; i += g.size)
        to[i] = packOut(from[i], gate, hasResidual ? res[i] : P{}, hasResidual, relu);
}

// Offset in packs of row `row` of `packs` packs: 64-bit, since rows * packs reaches 2^31 for one image of 2^31 * V
// elements (C and H*W are each below 2^31).
__host__ __device__ inline int64_t rowPacks(int64_t row, int packs)
{
    return row * int64_t(packs);
}

// Fused-path shared memory: [loadedMax rows of H*W elements], then the partial sums and gates below.
__host__ __device__ inline size_t fusedDataBytes(int loadedMax, int hw, size_t elemBytes)
{
    return (size_t(loadedMax) * size_t(hw) * elemBytes + 15) & ~size_t(15);
}

// [... data ...][loadedMax x kWarps partial sums][wrapRows x kWarps partial sums][tile gates]. wrapRows: with circular
// padding, the k-1 channels a tile's window wraps around to at the other end of C (pooled from X, not kept).
__host__ __device__ inline size_t fusedSmemBytes(int loadedMax, int wrapRows, int tile, int hw, size_t elemBytes)
{
    return fusedDataBytes(loadedMax, hw, elemBytes)
        + sizeof(float) * (size_t(loadedMax + wrapRows) * kWarps + tile);
}

// One block: channels [c0, c0 + tile) of image n. The tile and its halo are contiguous in X and copied in one sweep.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads) ecaFusedKernel(T const* __restrict__ x, T const* residual,
    T* y, __grid_constant__ EcaParams const p, int tile, int tiles, int groupSize)
{
    ECA_DYNAMIC_SHARED(smem);
    using P = Pack<T, V>;
    int const n = blockIdx.x / tiles;
    int const c0 = (blockIdx.x % tiles) * tile;
    int const outRows = min(tile, p.channels - c0);
    int const half = p.k / 2;
    int const l0 = max(c0 - half, 0);
    int const loaded = min(c0 + outRows + half, p.channels) - l0;
    int const loadedMax = min(p.channels, tile + 2 * half);
    int const packs = p.hw / V;

    // Circular padding over several tiles: the window of the first (last) tile wraps to the last (first) channels.
    bool const wraps = p.padding == ECA_PADDING_CIRCULAR && tiles > 1;
    int const wrapMax = p.padding == ECA_PADDING_CIRCULAR ? 2 * half : 0;
    int const wrapLow = wraps ? max(half - c0, 0) : 0;                              // channels [C - wrapLow, C)
    int const wrapHigh = wraps ? max(c0 + outRows + half - p.channels, 0) : 0;     // channels [0, wrapHigh)

    P* data = reinterpret_cast<P*>(smem);
    float* sums = reinterpret_cast<float*>(smem + fusedDataBytes(loadedMax, p.hw, sizeof(T)));
    float* wrapSums = sums + loadedMax * kWarps;
    float* gates = wrapSums + wrapMax * kWarps;
    Groups const g(groupSize);

    P const* image = reinterpret_cast<P const*>(x + int64_t(n) * p.channels * p.hw);
    copyToShared<4>(image + rowPacks(l0, packs), data, loaded * packs); // loaded * packs: shared memory, < 2^31
    sumRows(image + rowPacks(p.channels - wrapLow, packs), wrapLow, packs, packs, g, wrapSums); // from X: no reuse
    sumRows(image, wrapHigh, packs, packs, g, wrapSums + wrapLow * g.slots);
    __syncthreads();
    sumRows(data, loaded, packs, packs, g, sums);
    __syncthreads();
    for (int r = threadIdx.x; r < loaded + wrapLow + wrapHigh; r += int(blockDim.x))
    {
        float* const rows = r < loaded ? sums : wrapSums; // the mean replaces the row's first slot
        int const row = r < loaded ? r : r - loaded;
        rows[row * g.slots] = rowMean(rows, row, g.slots, p.invHw);
    }
    __syncthreads();
    for (int r = threadIdx.x; r < outRows; r += int(blockDim.x))
        gates[r] = channelGate(p, c0 + r, [&](int c) {
            if (c >= l0 && c < l0 + loaded)
                return sums[(c - l0) * g.slots];
            return c >= p.channels - wrapLow ? wrapSums[(c - (p.channels - wrapLow)) * g.slots]
                                             : wrapSums[(wrapLow + c) * g.slots];
        });
    __syncthreads();

    // Halo channels were pooled only; write the tile's own channels. Pack i of the tile is in row i / packs, computed
    // exactly in float: i < 2^22 (shared memory is far smaller).
    P const* from = data + (c0 - l0) * packs;
    int64_t const out = (int64_t(n) * p.channels + c0) * p.hw;
    P* to = reinterpret_cast<P*>(y + out);
    P const* res = residual != nullptr ? reinterpret_cast<P const*>(residual + out) : nullptr;
    bool const relu = p.activation == ECA_ACTIVATION_RELU;
    bool const hasResidual = res != nullptr;
    float const invPacks = 1.f / float(packs);
    for (int i = threadIdx.x; i < outRows * packs; i += int(blockDim.x))
    {
        P const r = hasResidual ? res[i] : P{};
        to[i] = packOut(from[i], gates[int((float(i) + 0.5f) * invPacks)], r, hasResidual, relu);
    }
}

// Two-pass, pass 1: block (x, y) sums chunk y (chunkPacks packs) of the rows [x * rowsPerBlock, ...) of the flattened
// [N*C, H*W] tensor into partials[row * splits + y], divided by H*W: a channel's mean is the sum of its partials.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads) ecaPoolKernel(T const* __restrict__ x, float* __restrict__ partials,
    __grid_constant__ EcaParams const p, int64_t rows, int rowsPerBlock, int chunkPacks, int groupSize)
{
    __shared__ float sums[kMaxPartials];
    int64_t const r0 = int64_t(blockIdx.x) * rowsPerBlock;
    int const rowsHere = int(min(int64_t(rowsPerBlock), rows - r0));
    int const packs = p.hw / V;
    int const split = int(blockIdx.y), splits = int(gridDim.y);
    int const begin = split * chunkPacks;
    Groups const g(groupSize);

    sumRows(reinterpret_cast<Pack<T, V> const*>(x) + rowPacks(r0, packs) + begin, rowsHere, packs,
        min(chunkPacks, packs - begin), g, sums);
    __syncthreads();
    for (int r = threadIdx.x; r < rowsHere; r += int(blockDim.x))
        partials[(r0 + r) * splits + split] = rowMean(sums, r, g.slots, p.invHw);
}

// Two-pass, pass 2: gates of rowsPerBlock channels from the partial means, then Y = X * gate on chunk y of each.
// X may be Y (in place), and the residual may be Y.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads) ecaScaleKernel(T const* x, T const* residual, T* y,
    float const* __restrict__ partials, __grid_constant__ EcaParams const p, int64_t rows, int rowsPerBlock,
    int chunkPacks, int groupSize)
{
    __shared__ float gates[kMaxRowsPerBlock];
    using P = Pack<T, V>;
    int64_t const r0 = int64_t(blockIdx.x) * rowsPerBlock;
    int const rowsHere = int(min(int64_t(rowsPerBlock), rows - r0));
    int const packs = p.hw / V;
    int const splits = int(gridDim.y);
    int const begin = int(blockIdx.y) * chunkPacks;
    int const count = min(chunkPacks, packs - begin);
    Groups const g(groupSize);

    for (int r = threadIdx.x; r < rowsHere; r += int(blockDim.x))
    {
        int64_t const n = (r0 + r) / p.channels;
        float const* m = partials + n * p.channels * splits;
        gates[r] = channelGate(p, int(r0 + r - n * p.channels), [&](int c) {
            float mean = 0.f;
            for (int i = 0; i < splits; ++i)
                mean += m[c * splits + i];
            return mean;
        });
    }
    __syncthreads();
    bool const relu = p.activation == ECA_ACTIVATION_RELU;
    for (int r = g.index; r < rowsHere; r += g.count)
    {
        int64_t const offset = rowPacks(r0 + r, packs) + begin;
        scaleRow<4>(reinterpret_cast<P const*>(x) + offset,
            residual != nullptr ? reinterpret_cast<P const*>(residual) + offset : nullptr,
            reinterpret_cast<P*>(y) + offset, gates[r], relu, count, g);
    }
}


// One-launch kernel for TensorRT's ahead-of-time plugin (eca_deploy/plugin/qdp.py): no workspace, no dynamic shared
// memory, only int32 launch arguments (the engine keeps no attributes). Block b owns channels [c0, c0 + tile) of image
// b / tiles (tile <= kQdpMaxTile): its warps pool the tile's window channels from X into shared memory, then all its
// threads write Y = act(X * gate). Pooling reads X (1 + (k - 1) / tile) times and the scale once more (mostly from
// L2): the two-pass traffic in one launch.
constexpr int kQdpMaxTile = 32;
constexpr int kQdpWeights = 64; // ECA_MAX_K rounded up to whole groups of 8 arguments
[[maybe_unused]] constexpr int kQdpArguments = 5 + 2 + 2 * kQdpWeights + 3; // int32 arguments between X and Y

// A float from the high and low 16 bits of its bits (each 0 .. 65535).
__device__ __forceinline__ float qdpFloat(int32_t high, int32_t low)
{
    return __int_as_float(int32_t((uint32_t(high) << 16) | (uint32_t(low) & 0xffffu)));
}

template <typename T>
__device__ __forceinline__ void qdpForward(T const* __restrict__ x, T* __restrict__ y, float const* w, int channels,
    int hw, int k, int tile, float bias, int padding, int gate, int activation)
{
    __shared__ float means[kQdpMaxTile + ECA_MAX_K - 1];
    __shared__ float gates[kQdpMaxTile];
    int const tiles = (channels + tile - 1) / tile;
    int const n = int(blockIdx.x) / tiles;
    int const c0 = int(blockIdx.x) % tiles * tile;
    int const outRows = min(tile, channels - c0);
    int const half = k / 2;
    int const rows = outRows + 2 * half; // window channels c0 - half ...
    T const* image = x + int64_t(n) * channels * hw;
    int const lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32, warps = int(blockDim.x) / 32;
    for (int r = warp; r < rows; r += warps) // uniform per warp: every lane reaches the shuffles
    {
        int c = c0 - half + r;
        bool const inside = c >= 0 && c < channels;
        if (padding == ECA_PADDING_CIRCULAR)
            c = ((c % channels) + channels) % channels;
        float s = 0.f;
        if (inside || padding == ECA_PADDING_CIRCULAR)
        {
            T const* row = image + rowPacks(c, hw);
            for (int i = lane; i < hw; i += 32)
                s += toFloat(row[i]);
        }
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1)
            s += __shfl_xor_sync(0xffffffffu, s, offset);
        if (lane == 0)
            means[r] = s / float(hw); // zeros padding: 0 outside [0, C)
    }
    __syncthreads();
    for (int r = int(threadIdx.x); r < outRows; r += int(blockDim.x))
    {
        float s = bias;
        for (int j = 0; j < k; ++j)
            s += w[j] * means[r + j];
        gates[r] = gate == ECA_GATE_HARD_SIGMOID ? fminf(fmaxf(s / 6.f + 0.5f, 0.f), 1.f) : 1.f / (1.f + expf(-s));
    }
    __syncthreads();
    int64_t const base = rowPacks(int64_t(n) * channels + c0, hw);
    int64_t const total = int64_t(outRows) * hw;
    bool const relu = activation == ECA_ACTIVATION_RELU;
    for (int64_t i = threadIdx.x; i < total; i += blockDim.x)
    {
        float const v = toFloat(x[base + i]) * gates[int(i / hw)];
        y[base + i] = fromFloat<T>(relu ? fmaxf(v, 0.f) : v);
    }
}

} // namespace

// The entry points of the ahead-of-time plugin, by their C names: X, then the int32 launch arguments in the order of
// eca_deploy/plugin/qdp.py's QDP_ARGUMENTS (n, channels, hw, k, tile, the bias and kQdpWeights weights as the high and
// low 16 bits of their float bits, padding, gate, activation), then Y. Every argument is non-negative: TensorRT makes
// each one a constant of its dimension expressions. Weights past k are 0.
#define ECA_QDP_W(i) int32_t w##i##h, int32_t w##i##l
#define ECA_QDP_W8(b)                                                                                              \
    ECA_QDP_W(b##0), ECA_QDP_W(b##1), ECA_QDP_W(b##2), ECA_QDP_W(b##3), ECA_QDP_W(b##4), ECA_QDP_W(b##5),          \
        ECA_QDP_W(b##6), ECA_QDP_W(b##7)
#define ECA_QDP_SET(b, j) sw[b * 8 + j] = qdpFloat(w##b##j##h, w##b##j##l)
#define ECA_QDP_SET8(b)                                                                                            \
    ECA_QDP_SET(b, 0), ECA_QDP_SET(b, 1), ECA_QDP_SET(b, 2), ECA_QDP_SET(b, 3), ECA_QDP_SET(b, 4),                 \
        ECA_QDP_SET(b, 5), ECA_QDP_SET(b, 6), ECA_QDP_SET(b, 7)
#define ECA_QDP_KERNEL(name, T)                                                                                    \
    extern "C" __global__ void __launch_bounds__(kThreads) name(T const* x, int32_t n, int32_t channels,          \
        int32_t hw, int32_t k, int32_t tile, int32_t biash, int32_t biasl, ECA_QDP_W8(0), ECA_QDP_W8(1),          \
        ECA_QDP_W8(2), ECA_QDP_W8(3), ECA_QDP_W8(4), ECA_QDP_W8(5), ECA_QDP_W8(6), ECA_QDP_W8(7), int32_t padding,  \
        int32_t gate, int32_t activation, T* y)                                                                    \
    {                                                                                                              \
        __shared__ float sw[kQdpWeights];                                                                          \
        (void) n;                                                                                                  \
        if (threadIdx.x == 0)                                                                                      \
        {                                                                                                          \
            ECA_QDP_SET8(0); ECA_QDP_SET8(1); ECA_QDP_SET8(2); ECA_QDP_SET8(3);                                    \
            ECA_QDP_SET8(4); ECA_QDP_SET8(5); ECA_QDP_SET8(6); ECA_QDP_SET8(7);                                    \
        }                                                                                                          \
        __syncthreads();                                                                                           \
        qdpForward<T>(x, y, sw, channels, hw, k, tile, qdpFloat(biash, biasl), padding, gate, activation);         \
    }
ECA_QDP_KERNEL(eca_qdp_forward_f32, float)
ECA_QDP_KERNEL(eca_qdp_forward_f16, __half)

#if !defined(ECA_QDP_ONLY)
namespace
{

// ---------------------------------------------------------------------------------------------------------------
// Host side

thread_local char tLastError[512];

int32_t fail(int32_t status, char const* format, ...)
{
    va_list args;
    va_start(args, format);
    std::vsnprintf(tLastError, sizeof(tLastError), format, args);
    va_end(args);
    return status;
}

struct DeviceLimits
{
    int device = 0;
    int sms = 0;
    size_t fusedBudget = 0; // shared memory a fused block may use: at most half an SM, so two blocks overlap
};

cudaError_t queryLimits(int device, DeviceLimits& d)
{
    int sms = 0, optin = 0, perSm = 0, reserved = 0;
    cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&perSm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, device);
    if (err != cudaSuccess)
        return err;
    d.device = device;
    d.sms = sms;
    d.fusedBudget = std::min(size_t(optin), size_t(std::max(perSm / 2 - reserved, 0)));
    return cudaSuccess;
}

// Limits of the current device, queried once per device.
int32_t currentDeviceLimits(DeviceLimits& out)
{
    static DeviceLimits cache[kMaxDevices];
    static cudaError_t cacheStatus[kMaxDevices];
    static std::once_flag once[kMaxDevices];
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err == cudaSuccess && device < kMaxDevices)
    {
        std::call_once(once[device], [device] { cacheStatus[device] = queryLimits(device, cache[device]); });
        err = cacheStatus[device];
        out = cache[device];
    }
    else if (err == cudaSuccess)
    {
        err = queryLimits(device, out);
    }
    return err == cudaSuccess ? ECA_STATUS_OK
                              : fail(ECA_STATUS_CUDA_ERROR, "cannot query the CUDA device: %s", cudaGetErrorString(err));
}

struct Shape
{
    int64_t n, c, hw;
    int32_t k;
    size_t elemBytes;
    bool circular = false; // padding: the fused path needs every channel in one block
    bool residual = false; // a residual input: one more read on either path

    int64_t rows() const { return n * c; }
    int32_t half() const { return k / 2; }
};

int32_t validate(int64_t n, int64_t c, int64_t h, int64_t w, int32_t k, eca_dtype_t dtype, Shape& s)
{
    if (dtype != ECA_DTYPE_FLOAT32 && dtype != ECA_DTYPE_FLOAT16)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "dtype %d is not ECA_DTYPE_FLOAT32 (0) or ECA_DTYPE_FLOAT16 (1)",
            int(dtype));
    if (k < 1 || k > ECA_MAX_K || k % 2 == 0)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "k=%d: the kernel size must be odd, 1 to %d", k, ECA_MAX_K);
    if (n < 0 || c < 0 || h < 0 || w < 0)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "negative dimension in shape [%lld, %lld, %lld, %lld]",
            (long long) n, (long long) c, (long long) h, (long long) w);
    if (c > INT32_MAX || (h > 0 && w > INT32_MAX / h) || (c > 0 && n > INT32_MAX / c))
        return fail(ECA_STATUS_INVALID_ARGUMENT, "shape [%lld, %lld, %lld, %lld] too large: N*C and H*W must be < 2^31",
            (long long) n, (long long) c, (long long) h, (long long) w);
    s = Shape{n, c, h * w, k, dtype == ECA_DTYPE_FLOAT16 ? sizeof(__half) : sizeof(float), false, false};
    return ECA_STATUS_OK;
}

// Threads per channel: a power of two that gives each thread at least 4 packs of a channel, up to the whole block.
int groupSizeFor(int64_t packs)
{
    int size = 1;
    while (size < kThreads && int64_t(size) * 2 * 4 <= packs)
        size *= 2;
    return size;
}

int64_t ceilDiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

// Blocks a launch should have at least: two per SM, so that one block's loads overlap another's stores.
int64_t targetBlocks(DeviceLimits const& d)
{
    return 2 * int64_t(std::max(d.sms, 1));
}

struct FusedPlan
{
    int tile = 0;
    int64_t blocks = 0;
    size_t smemBytes = 0;
    int threads = kThreads; // per block: fusedThreads
};

// Fused threads per block: one per pack of the first block's rows (its tile and upper halo), up to kThreads, in
// whole warps and whole groups.
int fusedThreads(Shape const& s, int tile, int v)
{
    int64_t const packs = s.hw / v;
    int64_t const unit = std::max(32, groupSizeFor(packs));
    int64_t const firstPacks = std::min<int64_t>(s.c, tile + s.half()) * packs;
    return int(std::clamp<int64_t>(ceilDiv(firstPacks, unit) * unit, unit, kThreads));
}

// The fused path's channel tile for this shape, or false if none fits. The tile is as small as two blocks per SM over
// the batch need, and at most what fits. forced: accept any tile that fits; otherwise also require that the halo at
// most doubles the bytes read (else two-pass, which reads X twice, is no worse).
bool planFused(Shape const& s, DeviceLimits const& d, bool forced, FusedPlan& plan)
{
    int64_t const halo = 2 * int64_t(s.half());
    int64_t const wrapRows = s.circular ? halo : 0; // partial sums of the channels a circular window wraps to
    int64_t const perChannel = s.hw * int64_t(s.elemBytes) + int64_t(sizeof(float)) * (kWarps + 1);
    int64_t const maxLoaded
        = (int64_t(d.fusedBudget) - 16 - int64_t(sizeof(float)) * kWarps * wrapRows) / perChannel;
    int64_t const tileFit = s.c <= maxLoaded ? s.c : maxLoaded - halo;
    if (maxLoaded < 1 || tileFit < 1)
        return false;
    int64_t const tilesPerImage = ceilDiv(targetBlocks(d), s.n);
    plan.tile = int(std::clamp<int64_t>(ceilDiv(s.c, tilesPerImage), 1, tileFit));
    if (s.circular && plan.tile < s.c && plan.tile + halo > s.c)
    {
        // A window wider than the channels left over: one tile of all C, if it fits.
        if (s.c > maxLoaded)
            return false;
        plan.tile = int(s.c);
    }
    int64_t const tiles = ceilDiv(s.c, plan.tile);
    if (!forced && tiles > 1 && plan.tile < halo)
        return false;
    plan.blocks = s.n * tiles;
    int const loadedMax = int(std::min<int64_t>(s.c, plan.tile + halo));
    plan.smemBytes = fusedSmemBytes(loadedMax, int(wrapRows), plan.tile, int(s.hw), s.elemBytes);
    return true;
}

struct TwoPassPlan
{
    int groupSize = 1;
    int rowsPerBlock = 1;
    int chunkPacks = 1; // packs of a channel per block
    int splits = 1;     // blocks per channel: H*W is split where there are too few channels for the SMs
    int64_t rowBlocks = 0;
    int threads = kThreads; // per block: the groups its rows keep busy, whole warps
    int activeThreads = 0;  // threads of a block with packs to load (the first block's)

    int64_t blocks() const { return rowBlocks * splits; }
};

// Two-pass blocks: about 4096 elements each, but enough blocks for two per SM; whole rounds of groups.
int rowsPerBlockFor(Shape const& s, DeviceLimits const& d, int groupSize)
{
    int64_t const groups = kThreads / groupSize;
    int64_t const slots = std::max(1, groupSize / 32);
    int64_t const forSize = groups * ceilDiv(4096, s.hw * groups);
    int64_t const forParallelism = ceilDiv(s.rows(), targetBlocks(d));
    int64_t const rows = std::min(forSize, ceilDiv(forParallelism, groups) * groups);
    return int(std::min(std::clamp<int64_t>(rows, groups, kMaxRowsPerBlock), kMaxPartials / slots));
}

// Most blocks per channel (the partial means must fit the workspace eca_workspace_size reports).
int64_t maxSplits(int64_t rows, int64_t hw)
{
    return std::max<int64_t>(1, std::min(hw / kMinSplitElements, kMaxSplitPartials / std::max<int64_t>(rows, 1)));
}

TwoPassPlan planTwoPass(Shape const& s, DeviceLimits const& d, int v)
{
    TwoPassPlan plan;
    int64_t const packs = s.hw / v;
    plan.groupSize = groupSizeFor(packs);
    plan.rowsPerBlock = rowsPerBlockFor(s, d, plan.groupSize);
    plan.rowBlocks = ceilDiv(s.rows(), plan.rowsPerBlock);
    int64_t splits = 1;
    if (plan.rowBlocks < targetBlocks(d))
        splits = std::min(ceilDiv(targetBlocks(d), plan.rowBlocks), maxSplits(s.rows(), s.hw));
    plan.chunkPacks = int(ceilDiv(packs, splits));
    plan.splits = int(ceilDiv(packs, plan.chunkPacks)); // no empty chunk
    plan.groupSize = groupSizeFor(plan.chunkPacks);     // narrower groups for shorter rows: the partials still fit
    // The block follows the rows: as many groups as it has rows (up to kThreads threads), in whole warps so that every
    // shuffle has its 32 lanes.
    int64_t const groups = std::min<int64_t>({kThreads / plan.groupSize, plan.rowsPerBlock, s.rows()});
    plan.threads = int(std::clamp<int64_t>(ceilDiv(plan.groupSize * groups, 32) * 32, 32, kThreads));
    plan.activeThreads = int(std::min<int64_t>(plan.groupSize, plan.chunkPacks) * groups);
    return plan;
}

// Workspace bytes of the two-pass path: an upper bound for every device and every smaller shape.
size_t twoPassWorkspace(Shape const& s)
{
    int64_t const split = std::min(s.rows() * std::max<int64_t>(1, s.hw / kMinSplitElements), kMaxSplitPartials);
    return size_t(std::max(s.rows(), split)) * sizeof(float);
}

// Widest access (16 or 8 bytes) that keeps every channel of x and y aligned; 1 element otherwise. Null pointers
// count as aligned (path selection by shape).
int packElements(void const* x, void const* y, Shape const& s, void const* residual = nullptr)
{
    for (size_t bytes : {size_t(16), size_t(8)})
    {
        int64_t const elems = int64_t(bytes / s.elemBytes);
        if (s.hw % elems == 0 && reinterpret_cast<uintptr_t>(x) % bytes == 0
            && reinterpret_cast<uintptr_t>(y) % bytes == 0 && reinterpret_cast<uintptr_t>(residual) % bytes == 0)
            return int(elems);
    }
    return 1;
}

// AUTO: fused when it fits with at most doubled reads and its estimated time, bytes moved over the share of the
// block target a launch reaches, is no more than two-pass's (X read twice and Y written, at its block count).
bool chooseFused(Shape const& s, DeviceLimits const& d, FusedPlan& plan)
{
    if (!planFused(s, d, false, plan))
        return false;
    int64_t const target = targetBlocks(d);
    int64_t const twoPassBlocks = planTwoPass(s, d, packElements(nullptr, nullptr, s)).blocks();
    bool const tiled = plan.tile < s.c;
    double const residual = s.residual ? 1.0 : 0.0;
    double const fusedBytes = 2.0 + residual + (tiled ? double(2 * s.half()) / plan.tile : 0.0); // in units of S
    double const fusedTime = fusedBytes * double(target) / double(std::min(plan.blocks, target));
    double const twoPassTime = (3.0 + residual) * double(target) / double(std::min(twoPassBlocks, target));
    return fusedTime <= twoPassTime;
}

// What a call launches: the path, its plan at pack width v, and the workspace it needs.
struct Launch
{
    bool fused = false;
    int v = 1;
    FusedPlan fusedPlan;
    TwoPassPlan twoPass;
    size_t workspace = 0;
};

// The one decision of path and geometry: eca_forward_op launches it; eca_workspace_size_op, eca_select_path_op and
// eca_launch_plan report it. v: the pack width of the call's pointers (packElements).
int32_t planLaunch(Shape const& s, DeviceLimits const& d, int32_t path, bool inPlace, int v, Launch& out)
{
    out = Launch{};
    out.v = v;
    if (s.rows() * s.hw == 0)
    {
        out.twoPass.rowBlocks = 0; // nothing to launch
        return ECA_STATUS_OK;
    }
    if (path == ECA_PATH_FUSED)
    {
        if (inPlace)
            return fail(ECA_STATUS_INVALID_ARGUMENT, "the fused path cannot run in place (x == y)");
        if (!planFused(s, d, true, out.fusedPlan))
            return fail(ECA_STATUS_NOT_SUPPORTED,
                "fused path: one channel of %lld elements plus its %d halo channels needs more than the %zu bytes of "
                "shared memory a block may use on this device",
                (long long) s.hw, 2 * s.half(), d.fusedBudget);
        out.fused = true;
    }
    else if (path == ECA_PATH_AUTO)
    {
        out.fused = !inPlace && chooseFused(s, d, out.fusedPlan);
    }
    else if (path != ECA_PATH_TWO_PASS)
    {
        return fail(ECA_STATUS_INVALID_ARGUMENT, "path %d is not AUTO (0), FUSED (1) or TWO_PASS (2)", int(path));
    }
    if (out.fused)
        out.fusedPlan.threads = fusedThreads(s, out.fusedPlan.tile, v);
    else
    {
        out.twoPass = planTwoPass(s, d, v);
        out.workspace = twoPassWorkspace(s);
    }
    return ECA_STATUS_OK;
}

EcaParams makeParams(Shape const& s, eca_op_t const& op)
{
    EcaParams p{};
    std::copy(op.weights, op.weights + s.k, p.w);
    p.k = s.k;
    p.channels = int32_t(s.c);
    p.hw = int32_t(s.hw);
    p.invHw = 1.f / float(s.hw);
    p.bias = op.bias;
    p.padding = op.padding;
    p.gate = op.gate;
    p.activation = op.activation;
    return p;
}

int32_t launchStatus(char const* what)
{
    cudaError_t const err = cudaGetLastError();
    return err == cudaSuccess ? ECA_STATUS_OK
                              : fail(ECA_STATUS_CUDA_ERROR, "%s kernel launch failed: %s", what, cudaGetErrorString(err));
}

template <typename T, int V>
int32_t runFused(void const* x, void const* residual, void* y, EcaParams const& p, Shape const& s, DeviceLimits const& d,
    FusedPlan const& plan, cudaStream_t stream)
{
    static_assert(V >= 1, "a pack holds at least one element");
    auto kernel = ecaFusedKernel<T, V>;
    if (plan.smemBytes > kDefaultSmem)
    {
        // Opt in once per device to the most a fused block may use there.
        static std::atomic<uint64_t> optedIn{0};
        uint64_t const bit = d.device < 64 ? uint64_t(1) << d.device : 0;
        if (!(optedIn.load() & bit))
        {
            cudaError_t const err
                = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(d.fusedBudget));
            if (err != cudaSuccess)
                return fail(ECA_STATUS_CUDA_ERROR, "cannot enable %zu bytes of shared memory: %s", d.fusedBudget,
                    cudaGetErrorString(err));
            optedIn.fetch_or(bit);
        }
    }
    int const tiles = int(ceilDiv(s.c, plan.tile));
    ECA_LAUNCH(kernel, unsigned(plan.blocks), plan.threads, plan.smemBytes, stream, static_cast<T const*>(x),
        static_cast<T const*>(residual), static_cast<T*>(y), p, plan.tile, tiles, groupSizeFor(s.hw / V));
    return launchStatus("fused");
}

template <typename T, int V>
int32_t runTwoPass(void const* x, void const* residual, void* y, EcaParams const& p, Shape const& s,
    TwoPassPlan const& plan, float* partials, cudaStream_t stream)
{
    dim3 const grid(unsigned(plan.rowBlocks), unsigned(plan.splits));
    auto pool = ecaPoolKernel<T, V>;
    ECA_LAUNCH(pool, grid, plan.threads, 0, stream, static_cast<T const*>(x), partials, p, s.rows(), plan.rowsPerBlock,
        plan.chunkPacks, plan.groupSize);
    int32_t const status = launchStatus("pool");
    if (status != ECA_STATUS_OK)
        return status;
    auto scale = ecaScaleKernel<T, V>;
    ECA_LAUNCH(scale, grid, plan.threads, 0, stream, static_cast<T const*>(x), static_cast<T const*>(residual),
        static_cast<T*>(y), partials, p, s.rows(), plan.rowsPerBlock, plan.chunkPacks, plan.groupSize);
    return launchStatus("scale");
}

template <typename T>
int32_t dispatch(void const* x, void const* r, void* y, EcaParams const& p, Shape const& s, DeviceLimits const& d,
    Launch const& launch, float* partials, cudaStream_t stream)
{
    constexpr int kWide = int(16 / sizeof(T));
    constexpr int kNarrow = int(8 / sizeof(T));
    int const v = launch.v;
    FusedPlan const& f = launch.fusedPlan;
    if (launch.fused)
        return v == kWide ? runFused<T, kWide>(x, r, y, p, s, d, f, stream)
            : v == kNarrow ? runFused<T, kNarrow>(x, r, y, p, s, d, f, stream)
                           : runFused<T, 1>(x, r, y, p, s, d, f, stream);
    TwoPassPlan const& t = launch.twoPass;
    return v == kWide ? runTwoPass<T, kWide>(x, r, y, p, s, t, partials, stream)
        : v == kNarrow ? runTwoPass<T, kNarrow>(x, r, y, p, s, t, partials, stream)
                       : runTwoPass<T, 1>(x, r, y, p, s, t, partials, stream);
}

int32_t validateOp(eca_op_t const* op)
{
    if (op == nullptr)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "op is NULL");
    if (op->weights == nullptr)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "weights is NULL (k=%d floats expected)", op->k);
    if (op->padding != ECA_PADDING_ZEROS && op->padding != ECA_PADDING_CIRCULAR)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "padding %d is not ZEROS (0) or CIRCULAR (1)", int(op->padding));
    if (op->gate != ECA_GATE_SIGMOID && op->gate != ECA_GATE_HARD_SIGMOID)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "gate %d is not SIGMOID (0) or HARD_SIGMOID (1)", int(op->gate));
    if (op->activation != ECA_ACTIVATION_NONE && op->activation != ECA_ACTIVATION_RELU)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "activation %d is not NONE (0) or RELU (1)", int(op->activation));
    return ECA_STATUS_OK;
}

#define ECA_VERSION_STRING                                                                                         \
    ECA_STR(ECA_KERNELS_VERSION_MAJOR) "." ECA_STR(ECA_KERNELS_VERSION_MINOR) "." ECA_STR(ECA_KERNELS_VERSION_PATCH)

char const kBuildInfo[] = "eca_kernels=" ECA_VERSION_STRING " cuda=" ECA_CUDA_VERSION " archs=" ECA_CUDA_ARCHS " max_k=" ECA_STR(ECA_MAX_K);

#if !defined(__CUDACC__)
// Host build only: the ahead-of-time kernel launched with the int32 arguments a[0 .. sizeof...(I)) between X and Y.
template <typename T, typename Kernel, size_t... I>
int32_t qdpHostLaunch(Kernel kernel, void const* x, void* y, uint32_t grid, uint32_t block, int32_t const* a,
    std::index_sequence<I...>)
{
    ECA_LAUNCH(kernel, grid, block, 0, nullptr, static_cast<T const*>(x), a[I]..., static_cast<T*>(y));
    return int32_t(cudaGetLastError());
}
#endif

} // namespace

extern "C" {

int32_t eca_kernels_version(void)
{
    return ECA_KERNELS_VERSION_MAJOR * 10000 + ECA_KERNELS_VERSION_MINOR * 100 + ECA_KERNELS_VERSION_PATCH;
}

char const* eca_kernels_build_info(void) { return kBuildInfo; }

char const* eca_last_error(void) { return tLastError; }

size_t eca_workspace_size(int64_t n, int64_t c, int64_t h, int64_t w, int32_t k, eca_dtype_t dtype, eca_path_t path)
{
    // FUSED needs none; TWO_PASS and AUTO the two-pass bound: AUTO runs two-pass in place or, for some shapes, with a
    // residual, which this query does not know (eca_workspace_size_op does).
    Shape s{};
    if (validate(n, c, h, w, k, dtype, s) != ECA_STATUS_OK || path == ECA_PATH_FUSED)
        return 0;
    return path == ECA_PATH_AUTO || path == ECA_PATH_TWO_PASS ? twoPassWorkspace(s) : 0;
}

size_t eca_workspace_size_op(int64_t n, int64_t c, int64_t h, int64_t w, eca_op_t const* op, int32_t has_residual,
    int32_t in_place, eca_dtype_t dtype, eca_path_t path)
{
    eca_launch_t launch{};
    return eca_launch_plan(n, c, h, w, op, has_residual, in_place, dtype, path, &launch) == ECA_STATUS_OK
        ? launch.workspace_bytes
        : 0;
}

int32_t eca_launch_plan(int64_t n, int64_t c, int64_t h, int64_t w, eca_op_t const* op, int32_t has_residual,
    int32_t in_place, eca_dtype_t dtype, eca_path_t path, eca_launch_t* out)
{
    Shape s{};
    DeviceLimits d;
    if (out == nullptr)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "out is NULL");
    *out = eca_launch_t{};
    if (int32_t const status = validate(n, c, h, w, op != nullptr ? op->k : 0, dtype, s))
        return status;
    if (int32_t const status = validateOp(op))
        return status;
    if (int32_t const status = currentDeviceLimits(d))
        return status;
    s.circular = op->padding == ECA_PADDING_CIRCULAR;
    s.residual = has_residual != 0;
    Launch launch;
    if (int32_t const status = planLaunch(s, d, path, in_place != 0, packElements(nullptr, nullptr, s), launch))
        return status;
    out->path = launch.fused ? ECA_PATH_FUSED : ECA_PATH_TWO_PASS;
    out->pack_elements = launch.v;
    out->workspace_bytes = launch.workspace;
    if (s.rows() * s.hw == 0)
        return ECA_STATUS_OK;
    if (launch.fused)
    {
        FusedPlan const& f = launch.fusedPlan;
        int64_t const firstLoaded = std::min<int64_t>(s.c, f.tile + s.half()); // block 0: its tile and upper halo
        out->launches = 1;
        out->blocks = f.blocks;
        out->threads = f.threads;
        out->active_threads = int32_t(std::min<int64_t>(f.threads, firstLoaded * (s.hw / launch.v)));
        out->shared_bytes = f.smemBytes;
    }
    else
    {
        TwoPassPlan const& t = launch.twoPass;
        out->launches = 2;
        out->blocks = t.blocks();
        out->threads = t.threads;
        out->active_threads = t.activeThreads;
    }
    return ECA_STATUS_OK;
}

int32_t eca_select_path(int64_t n, int64_t c, int64_t h, int64_t w, int32_t k, eca_dtype_t dtype)
{
    float const unused[ECA_MAX_K] = {}; // the path does not depend on the weights' values
    eca_op_t const op{unused, k, 0.f, ECA_PADDING_ZEROS, ECA_GATE_SIGMOID, ECA_ACTIVATION_NONE};
    return eca_select_path_op(n, c, h, w, &op, 0, dtype);
}

int32_t eca_select_path_op(
    int64_t n, int64_t c, int64_t h, int64_t w, eca_op_t const* op, int32_t has_residual, eca_dtype_t dtype)
{
    eca_launch_t launch{};
    return eca_launch_plan(n, c, h, w, op, has_residual, 0, dtype, ECA_PATH_AUTO, &launch) == ECA_STATUS_OK
        ? launch.path
        : -1;
}

int32_t eca_forward(void const* x, void* y, float const* weights, int32_t k, int64_t n, int64_t c, int64_t h, int64_t w,
    eca_dtype_t dtype, eca_path_t path, void* workspace, void* stream)
{
    eca_op_t const op{weights, k, 0.f, ECA_PADDING_ZEROS, ECA_GATE_SIGMOID, ECA_ACTIVATION_NONE};
    return eca_forward_op(x, nullptr, y, &op, n, c, h, w, dtype, path, workspace, stream);
}

int32_t eca_forward_op(void const* x, void const* residual, void* y, eca_op_t const* op, int64_t n, int64_t c,
    int64_t h, int64_t w, eca_dtype_t dtype, eca_path_t path, void* workspace, void* stream)
{
    Shape s{};
    if (int32_t const status = validate(n, c, h, w, op != nullptr ? op->k : 0, dtype, s))
        return status;
    if (int32_t const status = validateOp(op))
        return status;
    if (path != ECA_PATH_AUTO && path != ECA_PATH_FUSED && path != ECA_PATH_TWO_PASS)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "path %d is not AUTO (0), FUSED (1) or TWO_PASS (2)", int(path));
    if (s.rows() * s.hw == 0)
        return ECA_STATUS_OK;
    if (x == nullptr || y == nullptr)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "x or y is NULL");
    s.circular = op->padding == ECA_PADDING_CIRCULAR;
    s.residual = residual != nullptr;
    uintptr_t const bytes = uintptr_t(s.rows() * s.hw) * s.elemBytes;
    uintptr_t const xa = reinterpret_cast<uintptr_t>(x), ya = reinterpret_cast<uintptr_t>(y);
    uintptr_t const ra = reinterpret_cast<uintptr_t>(residual);
    bool const inPlace = xa == ya;
    if (!inPlace && xa < ya + bytes && ya < xa + bytes)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "x and y partially overlap");
    if (residual != nullptr && ra != ya && ra < ya + bytes && ya < ra + bytes)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "the residual and y partially overlap");
    if (xa % s.elemBytes != 0 || ya % s.elemBytes != 0 || ra % s.elemBytes != 0)
        return fail(ECA_STATUS_INVALID_ARGUMENT, "x, y or the residual is not aligned to its element size");

    DeviceLimits d;
    if (int32_t const status = currentDeviceLimits(d))
        return status;
    Launch launch;
    if (int32_t const status = planLaunch(s, d, path, inPlace, packElements(x, y, s, residual), launch))
        return status;
    if (launch.workspace > 0 && (workspace == nullptr || reinterpret_cast<uintptr_t>(workspace) % sizeof(float) != 0))
        return fail(ECA_STATUS_INVALID_ARGUMENT, "the two-pass path needs a float-aligned workspace of %zu bytes",
            launch.workspace);

    EcaParams const p = makeParams(s, *op);
    auto* const partials = static_cast<float*>(workspace);
    auto* const cudaStream = static_cast<cudaStream_t>(stream);
    return dtype == ECA_DTYPE_FLOAT16 ? dispatch<__half>(x, residual, y, p, s, d, launch, partials, cudaStream)
                                      : dispatch<float>(x, residual, y, p, s, d, launch, partials, cudaStream);
}

#if !defined(__CUDACC__)
// Host build only (tests): the pack offset of row `row` the kernels use, to check its arithmetic at sizes that cannot
// be allocated.
ECA_API int64_t eca_host_row_packs(int64_t row, int32_t packs) { return rowPacks(row, packs); }

// Host build only (tests): one launch of the ahead-of-time plugin's kernel `kernel` (its C name) with its `count`
// int32 arguments `a`, as TensorRT makes it from eca_deploy/plugin/qdp.py's launch parameters; cudaErrorInvalidValue
// for an unknown kernel or another argument count.
ECA_API int32_t eca_host_qdp_launch(char const* kernel, void const* x, void* y, uint32_t grid, uint32_t block,
    int32_t count, int32_t const* a)
{
    if (count != kQdpArguments || kernel == nullptr)
        return int32_t(cudaErrorInvalidValue);
    auto const order = std::make_index_sequence<kQdpArguments>();
    if (std::strcmp(kernel, "eca_qdp_forward_f16") == 0)
        return qdpHostLaunch<__half>(eca_qdp_forward_f16, x, y, grid, block, a, order);
    if (std::strcmp(kernel, "eca_qdp_forward_f32") == 0)
        return qdpHostLaunch<float>(eca_qdp_forward_f32, x, y, grid, block, a, order);
    return int32_t(cudaErrorInvalidValue);
}
#endif

} // extern "C"
#endif // !ECA_QDP_ONLY
