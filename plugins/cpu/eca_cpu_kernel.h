// ECA on the CPU, no runtime's headers: Y = act(X * gate(conv_k(pad(mean_hw(X))) + bias) + residual), float32,
// NCHW or ONNX Runtime's blocked NCHWc layout. The work is split into (image, channel tile) tasks that are
// independent of each other, so any thread pool can run them (the OpenVINO op uses ov::parallel_for, the ONNX
// Runtime op its KernelContext_ParallelFor). Each task computes the means of its channels and of the (k-1)/2 halo
// channels on either side, then the gates, then scales its channels while they are still in cache: X is read from
// memory once (plus the halo), Y written once. The op contract is docs/eca_op.md.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace eca_deploy::cpu
{

// Enum codes are the index in eca_deploy.ops ECA_PADDINGS / ECA_GATES / ECA_ACTIVATIONS.
enum class Padding : int { kZeros = 0, kCircular = 1 };
enum class Gate : int { kSigmoid = 0, kHardSigmoid = 1 };
enum class Activation : int { kNone = 0, kRelu = 1 };

constexpr int kMaxTaps = 63;
constexpr size_t kMaxBlock = 64; // largest block (lanes) of the blocked layout

// The attribute strings of the op contract, in enum-code order.
extern char const* const kPaddings[2];    // "zeros", "circular"
extern char const* const kGates[2];       // "sigmoid", "hard_sigmoid"
extern char const* const kActivations[2]; // "none", "relu"

// The enum code of an attribute string (its index in `names`), or -1 for a value the contract does not have.
int code_of(std::string const& value, char const* const (&names)[2]);

struct EcaParams
{
    std::vector<float> weights; // k taps, k odd, 1 <= k <= 63
    float bias = 0.0f;
    Padding padding = Padding::kZeros;
    Gate gate = Gate::kSigmoid;
    Activation activation = Activation::kNone;

    int half() const { return (static_cast<int>(weights.size()) - 1) / 2; }
};

struct Geometry
{
    size_t n = 0;  // images
    size_t c = 0;  // channels
    size_t hw = 0; // H * W
};

// Bytes of X one task aims to keep in cache between its mean and scale loops (its channels plus the halo).
constexpr size_t kTileBytes = 512 * 1024;

// Channels per task: as many as fit in `cache_bytes` with their halo, but at least `threads` tasks in all
// (when there are channels enough) so every thread has work at batch 1.
size_t channel_tile(Geometry const& g, int half, size_t threads, size_t cache_bytes = kTileBytes);

// One task: channels [c0, c1) of image `image`. `residual` may be null. `means` is scratch of g.c floats.
// `y` may alias `x` only if the caller runs eca_means_all first and passes `means_ready` (tasks then read no halo).
void eca_tile(EcaParams const& p, Geometry const& g, float const* x, float const* residual, float* y, size_t image,
    size_t c0, size_t c1, float* means, bool means_ready = false);

// The tasks of one call (y not aliasing x): (image, channel tile) pairs numbered 0 .. count() - 1.
struct TaskGrid
{
    Geometry g;
    size_t tile = 1;  // channels per task
    size_t tiles = 1; // tasks per image

    TaskGrid(Geometry const& geometry, int half, size_t threads);
    size_t count() const { return g.n * tiles; }
};

// Runs one task of the grid; safe to call from any thread (its scratch is thread-local).
void eca_task(EcaParams const& p, TaskGrid const& grid, float const* x, float const* residual, float* y, size_t task);

// Means of every channel of image `image` into means[0..c).
void eca_means_all(Geometry const& g, float const* x, size_t image, float* means);

// Mean of n floats, float32 accumulation in 16 partial sums (vectorised by the compiler).
float channel_mean(float const* x, size_t n);

// The blocked layout (ONNX Runtime's NCHWc): X, residual and Y are [N][Cp/B][H][W][B] floats, Cp = C rounded up to
// the block B, channel c in lane c % B of block c / B. The C logical channels are read; Y's padding lanes get 0.
struct BlockedGeometry
{
    size_t n = 0;     // images
    size_t c = 0;     // logical channels
    size_t hw = 0;    // H * W
    size_t block = 1; // B, 1 <= B <= kMaxBlock

    size_t blocks() const { return (c + block - 1) / block; }
};

// The (image, block tile) tasks of one blocked call: a TaskGrid over the blocks (tile and tiles count blocks).
TaskGrid blocked_grid(BlockedGeometry const& g, int half, size_t threads);

// Runs one task of blocked_grid(g, p.half(), ...) (y not aliasing x); safe to call from any thread.
void eca_blocked_task(EcaParams const& p, BlockedGeometry const& g, TaskGrid const& grid, float const* x,
    float const* residual, float* y, size_t task);

} // namespace eca_deploy::cpu
