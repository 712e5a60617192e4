// ECA CPU kernel (see eca_cpu_kernel.h). Plain loops written so the compiler vectorises them; on x86-64 with GCC or
// Clang the hot loops (the mean and the scale, of either layout) are compiled for AVX-512, AVX2 and the baseline and
// picked at load time (target_clones).
#include "eca_cpu_kernel.h"

#include <algorithm>
#include <cmath>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(ECA_NO_TARGET_CLONES)
#define ECA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ECA_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ECA_INLINE inline __attribute__((always_inline))
#else
#define ECA_INLINE inline
#endif

namespace eca_deploy::cpu
{
namespace
{

constexpr size_t kLanes = 16;

ECA_CLONES float sum_floats(float const* __restrict x, size_t n)
{
    float acc[kLanes] = {};
    size_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
    {
        for (size_t l = 0; l < kLanes; ++l)
        {
            acc[l] += x[i + l];
        }
    }
    float total = 0.0f;
    for (; i < n; ++i)
    {
        total += x[i];
    }
    for (size_t l = 0; l < kLanes; ++l)
    {
        total += acc[l];
    }
    return total;
}

// y = act(x * g + r) over one channel; r may be null.
ECA_CLONES void scale_channel(
    float const* __restrict x, float const* __restrict r, float* __restrict y, size_t n, float g, bool relu)
{
    if (r != nullptr && relu)
    {
        for (size_t i = 0; i < n; ++i)
        {
            y[i] = std::max(x[i] * g + r[i], 0.0f);
        }
    }
    else if (r != nullptr)
    {
        for (size_t i = 0; i < n; ++i)
        {
            y[i] = x[i] * g + r[i];
        }
    }
    else if (relu)
    {
        for (size_t i = 0; i < n; ++i)
        {
            y[i] = std::max(x[i] * g, 0.0f);
        }
    }
    else
    {
        for (size_t i = 0; i < n; ++i)
        {
            y[i] = x[i] * g;
        }
    }
}

// Same as scale_channel where y aliases x (in place): no restrict.
void scale_channel_inplace(float* x, float const* r, size_t n, float g, bool relu)
{
    for (size_t i = 0; i < n; ++i)
    {
        float v = x[i] * g + (r != nullptr ? r[i] : 0.0f);
        x[i] = relu ? std::max(v, 0.0f) : v;
    }
}

size_t wrap(long i, size_t c)
{
    long const m = static_cast<long>(c);
    long const r = i % m;
    return static_cast<size_t>(r < 0 ? r + m : r);
}

float apply_gate(Gate gate, float s)
{
    if (gate == Gate::kHardSigmoid)
    {
        return std::min(std::max(s / 6.0f + 0.5f, 0.0f), 1.0f);
    }
    return 1.0f / (1.0f + std::exp(-s));
}

// The gate of logical channel c of C from the means of its k neighbours (the contract's padding at the ends).
float channel_gate(EcaParams const& p, size_t c_total, float const* means, size_t c)
{
    int const k = static_cast<int>(p.weights.size());
    int const half = p.half();
    bool const circular = p.padding == Padding::kCircular;
    float s = p.bias;
    for (int j = 0; j < k; ++j)
    {
        long const i = static_cast<long>(c) + j - half;
        float m = 0.0f;
        if (circular)
        {
            m = means[wrap(i, c_total)];
        }
        else if (i >= 0 && i < static_cast<long>(c_total))
        {
            m = means[i];
        }
        s += p.weights[j] * m;
    }
    return apply_gate(p.gate, s);
}

// The channels whose means the gates of channels [c0, c1) of C read: [c0, c1) and its (k-1)/2 halo channels on
// either side, clipped (zeros) or wrapped (circular): at most two ranges [begin, end).
struct ChannelRanges
{
    size_t begin[2] = {0, 0};
    size_t end[2] = {0, 0};
    int count = 0;
};

ChannelRanges halo_ranges(EcaParams const& p, size_t c_total, size_t c0, size_t c1)
{
    long const m = static_cast<long>(c_total);
    long const lo = static_cast<long>(c0) - p.half();
    long const hi = static_cast<long>(c1) + p.half(); // exclusive
    ChannelRanges r;
    if (p.padding != Padding::kCircular)
    {
        r.begin[0] = static_cast<size_t>(std::max(lo, 0L));
        r.end[0] = static_cast<size_t>(std::min(hi, m));
        r.count = 1;
    }
    else if (hi - lo >= m)
    {
        r.end[0] = c_total;
        r.count = 1;
    }
    else
    {
        // Less than C channels: [lo, hi) wraps at most at one end.
        long const start = lo < 0 ? lo + m : lo;
        long const stop = start + (hi - lo);
        r.begin[0] = static_cast<size_t>(start);
        r.end[0] = static_cast<size_t>(std::min(stop, m));
        r.end[1] = static_cast<size_t>(std::max(stop - m, 0L));
        r.count = stop > m ? 2 : 1;
    }
    return r;
}

// The blocked layout's loops, for a block size fixed at compile time (kB: 8, 16) or read at run time (kB = 0, any
// b <= kMaxBlock); inlined into the ISA clones below.
template <size_t kB>
ECA_INLINE void block_means_loop(float const* __restrict x, size_t hw, size_t b, float* __restrict means)
{
    constexpr size_t kWidth = kB != 0 ? kB : kMaxBlock;
    constexpr size_t kRows = 4; // pixels summed into separate partial sums
    size_t const lanes = kB != 0 ? kB : b;
    float acc[kRows][kWidth] = {};
    size_t i = 0;
    for (; i + kRows <= hw; i += kRows)
    {
        for (size_t row = 0; row < kRows; ++row)
        {
            for (size_t l = 0; l < lanes; ++l)
            {
                acc[row][l] += x[(i + row) * lanes + l];
            }
        }
    }
    for (; i < hw; ++i)
    {
        for (size_t l = 0; l < lanes; ++l)
        {
            acc[0][l] += x[i * lanes + l];
        }
    }
    float const scale = hw == 0 ? 0.0f : 1.0f / static_cast<float>(hw);
    for (size_t l = 0; l < lanes; ++l)
    {
        means[l] = ((acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l])) * scale;
    }
}

// y = act(x * gate + r) over one block, gates per lane; kResidual: r is read.
template <size_t kB, bool kResidual, bool kRelu>
ECA_INLINE void block_scale_loop(float const* __restrict x, float const* __restrict r, float* __restrict y, size_t hw,
    size_t b, float const* __restrict gates)
{
    size_t const lanes = kB != 0 ? kB : b;
    for (size_t i = 0; i < hw; ++i)
    {
        for (size_t l = 0; l < lanes; ++l)
        {
            float v = x[i * lanes + l] * gates[l];
            if constexpr (kResidual)
            {
                v += r[i * lanes + l];
            }
            if constexpr (kRelu)
            {
                v = std::max(v, 0.0f);
            }
            y[i * lanes + l] = v;
        }
    }
}

template <size_t kB>
ECA_INLINE void block_scale_any(float const* __restrict x, float const* __restrict r, float* __restrict y, size_t hw,
    size_t b, float const* __restrict gates, bool relu)
{
    if (r != nullptr && relu)
    {
        block_scale_loop<kB, true, true>(x, r, y, hw, b, gates);
    }
    else if (r != nullptr)
    {
        block_scale_loop<kB, true, false>(x, r, y, hw, b, gates);
    }
    else if (relu)
    {
        block_scale_loop<kB, false, true>(x, r, y, hw, b, gates);
    }
    else
    {
        block_scale_loop<kB, false, false>(x, r, y, hw, b, gates);
    }
}

ECA_CLONES void block_means(float const* __restrict x, size_t hw, size_t b, float* __restrict means)
{
    if (b == 8)
    {
        block_means_loop<8>(x, hw, b, means);
    }
    else if (b == 16)
    {
        block_means_loop<16>(x, hw, b, means);
    }
    else
    {
        block_means_loop<0>(x, hw, b, means);
    }
}

ECA_CLONES void block_scale(float const* __restrict x, float const* __restrict r, float* __restrict y, size_t hw,
    size_t b, float const* __restrict gates, bool relu)
{
    if (b == 8)
    {
        block_scale_any<8>(x, r, y, hw, b, gates, relu);
    }
    else if (b == 16)
    {
        block_scale_any<16>(x, r, y, hw, b, gates, relu);
    }
    else
    {
        block_scale_any<0>(x, r, y, hw, b, gates, relu);
    }
}

} // namespace

char const* const kPaddings[2] = {"zeros", "circular"};
char const* const kGates[2] = {"sigmoid", "hard_sigmoid"};
char const* const kActivations[2] = {"none", "relu"};

int code_of(std::string const& value, char const* const (&names)[2])
{
    for (int i = 0; i < 2; ++i)
    {
        if (value == names[i])
        {
            return i;
        }
    }
    return -1;
}

float channel_mean(float const* x, size_t n)
{
    return n == 0 ? 0.0f : sum_floats(x, n) / static_cast<float>(n);
}

size_t channel_tile(Geometry const& g, int half, size_t threads, size_t cache_bytes)
{
    if (g.c == 0)
    {
        return 1;
    }
    size_t const channel_bytes = std::max<size_t>(g.hw * sizeof(float), 1);
    size_t const fit = cache_bytes / channel_bytes;
    size_t const halo = 2 * static_cast<size_t>(half);
    size_t tile = fit > halo + 1 ? fit - halo : 1;
    // Enough tasks for every thread, as long as a tile keeps more channels than its halo.
    size_t const wanted_tiles = g.n >= threads ? 1 : (threads + g.n - 1) / g.n;
    size_t const split = (g.c + wanted_tiles - 1) / wanted_tiles;
    if (split < tile && split >= std::max<size_t>(halo, 1))
    {
        tile = split;
    }
    tile = std::min(tile, g.c);
    size_t const tiles = (g.c + tile - 1) / tile;
    return (g.c + tiles - 1) / tiles; // equal tiles
}

void eca_means_all(Geometry const& g, float const* x, size_t image, float* means)
{
    float const* xi = x + image * g.c * g.hw;
    for (size_t c = 0; c < g.c; ++c)
    {
        means[c] = channel_mean(xi + c * g.hw, g.hw);
    }
}

void eca_tile(EcaParams const& p, Geometry const& g, float const* x, float const* residual, float* y, size_t image,
    size_t c0, size_t c1, float* means, bool means_ready)
{
    size_t const offset = image * g.c * g.hw;
    float const* xi = x + offset;
    float const* ri = residual != nullptr ? residual + offset : nullptr;
    float* yi = y + offset;
    if (!means_ready)
    {
        ChannelRanges const needed = halo_ranges(p, g.c, c0, c1);
        for (int range = 0; range < needed.count; ++range)
        {
            for (size_t c = needed.begin[range]; c < needed.end[range]; ++c)
            {
                means[c] = channel_mean(xi + c * g.hw, g.hw);
            }
        }
    }

    bool const relu = p.activation == Activation::kRelu;
    bool const inplace = yi == xi;
    for (size_t c = c0; c < c1; ++c)
    {
        float const gate = channel_gate(p, g.c, means, c);
        float const* rc = ri != nullptr ? ri + c * g.hw : nullptr;
        if (inplace)
        {
            scale_channel_inplace(yi + c * g.hw, rc, g.hw, gate, relu);
        }
        else
        {
            scale_channel(xi + c * g.hw, rc, yi + c * g.hw, g.hw, gate, relu);
        }
    }
}

TaskGrid::TaskGrid(Geometry const& geometry, int half, size_t threads)
    : g(geometry)
    , tile(channel_tile(geometry, half, std::max<size_t>(threads, 1)))
    , tiles(geometry.c == 0 ? 0 : (geometry.c + tile - 1) / tile)
{
}

void eca_task(EcaParams const& p, TaskGrid const& grid, float const* x, float const* residual, float* y, size_t task)
{
    thread_local std::vector<float> means;
    if (means.size() < grid.g.c)
    {
        means.resize(grid.g.c);
    }
    size_t const n = task / grid.tiles;
    size_t const c0 = (task % grid.tiles) * grid.tile;
    eca_tile(p, grid.g, x, residual, y, n, c0, std::min(grid.g.c, c0 + grid.tile), means.data());
}

// The blocked layout (NCHWc).

TaskGrid blocked_grid(BlockedGeometry const& g, int half, size_t threads)
{
    size_t const halo_blocks = (static_cast<size_t>(half) + g.block - 1) / g.block;
    return TaskGrid(Geometry{g.n, g.blocks(), g.hw * g.block}, static_cast<int>(halo_blocks), threads);
}

namespace
{

// Means of every logical channel in the blocks that hold channels [c0, c1) and their halo, into means[channel].
void blocked_means(
    EcaParams const& p, BlockedGeometry const& g, float const* xi, size_t c0, size_t c1, float* means)
{
    ChannelRanges const needed = halo_ranges(p, g.c, c0, c1);
    size_t const block_floats = g.hw * g.block;
    for (int range = 0; range < needed.count; ++range)
    {
        size_t const last = (needed.end[range] + g.block - 1) / g.block; // exclusive
        for (size_t b = needed.begin[range] / g.block; b < last; ++b)
        {
            block_means(xi + b * block_floats, g.hw, g.block, means + b * g.block);
        }
    }
}

// Writes 0 to lanes [used, b) of one block of Y: the channels past C.
void zero_padding_lanes(float* y, size_t hw, size_t b, size_t used)
{
    for (size_t i = 0; i < hw; ++i)
    {
        std::fill(y + i * b + used, y + (i + 1) * b, 0.0f);
    }
}

} // namespace

void eca_blocked_task(EcaParams const& p, BlockedGeometry const& g, TaskGrid const& grid, float const* x,
    float const* residual, float* y, size_t task)
{
    thread_local std::vector<float> means;
    size_t const padded = g.blocks() * g.block;
    if (means.size() < padded)
    {
        means.resize(padded);
    }
    size_t const block_floats = g.hw * g.block;
    size_t const offset = task / grid.tiles * g.blocks() * block_floats;
    size_t const b0 = (task % grid.tiles) * grid.tile;
    size_t const b1 = std::min(g.blocks(), b0 + grid.tile);
    blocked_means(p, g, x + offset, b0 * g.block, std::min(g.c, b1 * g.block), means.data());
    bool const relu = p.activation == Activation::kRelu;
    float gates[kMaxBlock];
    for (size_t b = b0; b < b1; ++b)
    {
        size_t const used = std::min(g.block, g.c - b * g.block); // logical channels in this block
        for (size_t l = 0; l < g.block; ++l)
        {
            gates[l] = l < used ? channel_gate(p, g.c, means.data(), b * g.block + l) : 0.0f;
        }
        size_t const at = offset + b * block_floats;
        block_scale(x + at, residual != nullptr ? residual + at : nullptr, y + at, g.hw, g.block, gates, relu);
        if (used < g.block)
        {
            zero_padding_lanes(y + at, g.hw, g.block, used);
        }
    }
}

} // namespace eca_deploy::cpu
