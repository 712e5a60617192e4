// ECA CPU kernel (see eca_cpu_kernel.h). Plain loops written so the compiler vectorises them; on x86-64 with GCC or
// Clang the two hot loops are compiled for AVX-512, AVX2 and the baseline and picked at load time (target_clones).
#include "eca_cpu_kernel.h"

#include <algorithm>
#include <cmath>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(ECA_NO_TARGET_CLONES)
#define ECA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ECA_CLONES
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
    int const half = p.half();
    bool const circular = p.padding == Padding::kCircular;
    long const lo = static_cast<long>(c0) - half;
    long const hi = static_cast<long>(c1) + half; // exclusive

    if (!means_ready)
    {
        if (!circular)
        {
            for (size_t c = static_cast<size_t>(std::max(lo, 0L)); c < std::min<size_t>(g.c, hi); ++c)
            {
                means[c] = channel_mean(xi + c * g.hw, g.hw);
            }
        }
        else if (static_cast<size_t>(hi - lo) >= g.c)
        {
            eca_means_all(g, x, image, means);
        }
        else
        {
            for (long i = lo; i < hi; ++i)
            {
                size_t const c = wrap(i, g.c);
                means[c] = channel_mean(xi + c * g.hw, g.hw);
            }
        }
    }

    int const k = static_cast<int>(p.weights.size());
    float const* w = p.weights.data();
    bool const relu = p.activation == Activation::kRelu;
    bool const inplace = yi == xi;
    for (size_t c = c0; c < c1; ++c)
    {
        float s = p.bias;
        for (int j = 0; j < k; ++j)
        {
            long const i = static_cast<long>(c) + j - half;
            float m = 0.0f;
            if (circular)
            {
                m = means[wrap(i, g.c)];
            }
            else if (i >= 0 && i < static_cast<long>(g.c))
            {
                m = means[i];
            }
            s += w[j] * m;
        }
        float const gate = apply_gate(p.gate, s);
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

} // namespace eca_deploy::cpu
