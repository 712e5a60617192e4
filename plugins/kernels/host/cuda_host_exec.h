// The CUDA execution model on the CPU, so that the kernel sources compile with a host C++ compiler and run in tests
// without a GPU. eca_kernels.cu includes this header when it is not compiled by nvcc.
//
// - Every thread of a block is an OS thread (a pool of blockDim workers); blocks of a grid run one after another.
// - __syncthreads() is a barrier of the block's threads; a thread that returns leaves the barrier (as on a GPU).
// - __shfl_xor_sync() exchanges values among the 32 threads of a warp through a warp-wide barrier (full masks only).
// - Static __shared__ arrays are function statics (blocks run one at a time, so one copy per kernel is one per
//   block); dynamic shared memory is a buffer of exactly the launch's size, filled with 0xFF bytes (NaN in float32
//   and float16) before each block and followed by a guard that is checked after it.
// - threadIdx, blockIdx, blockDim, gridDim are per-thread values; __half and its conversions come from CUDA's own
//   cuda_fp16.h, whose host implementations round as the GPU does.
// - The runtime calls the kernels' host code makes: devices with the attributes of real GPUs (cudaSetDevice picks
//   one), cudaFuncSetAttribute opt-in checked at launch as the driver does, launch errors through
//   cudaGetLastError(). Streams are not used (launches run to completion); memory is host memory.
//
// A block that does not finish within a minute (a barrier that not every live thread reaches) aborts with a message:
// on a GPU that is undefined behaviour or a hang. Needs C++20 (atomic wait).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

// The execution-space and memory-space keywords: plain C++ (host_defines.h maps them to unknown attributes).
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __grid_constant__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __grid_constant__
#define __launch_bounds__(...)

#ifndef CUDA_HOST_API
#define CUDA_HOST_API __attribute__((visibility("default")))
#endif

// Bit casts of the CUDA math API.
inline float __int_as_float(int v)
{
    float f;
    std::memcpy(&f, &v, sizeof f);
    return f;
}

namespace cuda_host
{

constexpr int kWarpSize = 32;
constexpr size_t kDefaultDynamicSmem = 48 << 10; // what a launch may use without cudaFuncSetAttribute
constexpr size_t kGuardBytes = 64;
constexpr auto kBarrierTimeout = std::chrono::seconds(60);

[[noreturn]] inline void die(char const* what)
{
    std::fprintf(stderr, "cuda_host_exec: %s\n", what);
    std::abort();
}

// A reusable barrier of `count` threads (waiting on an atomic, a futex on Linux); a thread that leaves (returns from
// the kernel) stops counting, as an exited thread does on a GPU.
class Barrier
{
public:
    void reset(int count)
    {
        mState.store(uint64_t(count) << 32, std::memory_order_relaxed);
    }

    void arriveAndWait()
    {
        uint32_t const generation = mGeneration.load(std::memory_order_acquire);
        if (arrive(1, 0))
            return;
        for (uint32_t g = generation; g == generation; g = mGeneration.load(std::memory_order_acquire))
            mGeneration.wait(generation, std::memory_order_acquire);
    }

    void leave()
    {
        arrive(0, 1);
    }

private:
    // State: expected threads in the high word, arrived in the low word. True for the thread that releases.
    bool arrive(uint64_t arriving, uint64_t leaving)
    {
        uint64_t state = mState.load(std::memory_order_relaxed);
        for (;;)
        {
            uint64_t const expected = (state >> 32) - leaving;
            uint64_t const arrived = (state & 0xffffffffu) + arriving;
            bool const release = arrived > 0 && arrived == expected;
            uint64_t const next = (expected << 32) | (release ? 0 : arrived);
            if (mState.compare_exchange_weak(state, next, std::memory_order_acq_rel, std::memory_order_relaxed))
            {
                if (release)
                {
                    mGeneration.fetch_add(1, std::memory_order_release);
                    mGeneration.notify_all();
                }
                return release;
            }
        }
    }

    std::atomic<uint64_t> mState{0};
    std::atomic<uint32_t> mGeneration{0};
};

struct Warp
{
    Barrier barrier;
    uint64_t slots[2][kWarpSize]; // shuffles alternate between two sets, so one barrier per shuffle suffices
};

struct ThreadState
{
    uint3 threadIdx{0, 0, 0};
    uint3 blockIdx{0, 0, 0};
    dim3 blockDim{1, 1, 1};
    dim3 gridDim{1, 1, 1};
    int lane = 0;
    int shuffles = 0; // of this thread in this block: selects the slot set
    Warp* warp = nullptr;
};

inline thread_local ThreadState tThread;

// One block at a time on a pool of worker threads, one per thread of the block.
class BlockRunner
{
public:
    ~BlockRunner()
    {
        {
            std::lock_guard<std::mutex> lock(mMutex);
            mStop = true;
        }
        mWork.notify_all();
        for (auto& t : mWorkers)
            t.join();
    }

    // Runs body() on `threads` threads as one block; returns when all have returned.
    void run(dim3 block, dim3 grid, uint3 blockIdx, std::function<void()> const& body)
    {
        int const threads = int(block.x * block.y * block.z);
        int const warps = (threads + kWarpSize - 1) / kWarpSize;
        while (int(mWorkers.size()) < threads)
        {
            int const index = int(mWorkers.size());
            mWorkers.emplace_back([this, index] { work(index); });
        }
        mWarps.resize(std::max<size_t>(mWarps.size(), size_t(warps)));
        for (int w = 0; w < warps; ++w)
        {
            if (!mWarps[w])
                mWarps[w] = std::make_unique<Warp>();
            mWarps[w]->barrier.reset(std::min(kWarpSize, threads - w * kWarpSize));
        }
        mBlockBarrier.reset(threads);
        std::unique_lock<std::mutex> lock(mMutex);
        mBody = &body;
        mBlock = block;
        mGrid = grid;
        mBlockIdx = blockIdx;
        mThreads = threads;
        mRunning = threads;
        ++mGeneration;
        mWork.notify_all();
        if (!mDone.wait_for(lock, kBarrierTimeout, [&] { return mRunning == 0; }))
            die("a block did not finish within a minute: a __syncthreads() or shuffle that not every thread reaches?");
        mBody = nullptr;
    }

    Barrier& blockBarrier() { return mBlockBarrier; }

private:
    void work(int index)
    {
        uint64_t seen = 0;
        for (;;)
        {
            std::function<void()> const* body = nullptr;
            {
                std::unique_lock<std::mutex> lock(mMutex);
                mWork.wait(lock, [&] { return mStop || (mGeneration != seen && index < mThreads); });
                if (mStop)
                    return;
                seen = mGeneration;
                body = mBody;
                ThreadState& t = tThread;
                t.blockDim = mBlock;
                t.gridDim = mGrid;
                t.blockIdx = mBlockIdx;
                unsigned const i = unsigned(index);
                t.threadIdx = uint3{i % mBlock.x, i / mBlock.x % mBlock.y, i / (mBlock.x * mBlock.y)};
                t.lane = index % kWarpSize;
                t.shuffles = 0;
                t.warp = mWarps[index / kWarpSize].get();
            }
            (*body)();
            tThread.warp->barrier.leave();
            mBlockBarrier.leave();
            std::lock_guard<std::mutex> lock(mMutex);
            if (--mRunning == 0)
                mDone.notify_all();
        }
    }

    std::vector<std::thread> mWorkers;
    std::vector<std::unique_ptr<Warp>> mWarps;
    Barrier mBlockBarrier;
    std::mutex mMutex;
    std::condition_variable mWork, mDone;
    std::function<void()> const* mBody = nullptr;
    dim3 mBlock, mGrid;
    uint3 mBlockIdx{0, 0, 0};
    int mThreads = 0;
    int mRunning = 0;
    uint64_t mGeneration = 0;
    bool mStop = false;
};

// Attributes of the devices the host execution offers (cudaSetDevice selects one): real GPUs' values.
struct DeviceSpec
{
    char const* name;
    int sms;
    int smemOptin;    // cudaDevAttrMaxSharedMemoryPerBlockOptin
    int smemPerSm;    // cudaDevAttrMaxSharedMemoryPerMultiprocessor
    int smemReserved; // cudaDevAttrReservedSharedMemoryPerBlock
};

inline DeviceSpec const kDevices[] = {
    {"H100 SXM (sm_90)", 132, 232448, 233472, 1024},
    {"A100 (sm_80)", 108, 166912, 167936, 1024},
    {"Jetson AGX Orin (sm_87)", 16, 166912, 167936, 1024},
    {"Jetson Orin Nano 4GB (sm_87)", 4, 166912, 167936, 1024},
    {"RTX 4090 (sm_89)", 128, 101376, 102400, 1024},
    {"T4 (sm_75)", 40, 65536, 65536, 0},
};
constexpr int kDeviceCount = int(sizeof(kDevices) / sizeof(kDevices[0]));

struct LaunchRecord
{
    dim3 grid, block;
    size_t smem;
};

struct Runtime
{
    std::mutex launchMutex; // one launch at a time
    BlockRunner runner;
    std::vector<unsigned char> dynamicSmem;
    size_t dynamicBytes = 0;
    std::map<void const*, int> maxDynamicSmem[kDeviceCount]; // cudaFuncAttributeMaxDynamicSharedMemorySize
    std::vector<LaunchRecord> launches;
    std::mutex recordMutex;
};

inline Runtime& runtime()
{
    static Runtime* r = new Runtime; // never destroyed: workers may outlive static destruction order
    return *r;
}

inline thread_local int tDevice = 0;
inline thread_local cudaError_t tLastError = cudaSuccess;

inline unsigned char* dynamicShared()
{
    return runtime().dynamicSmem.data();
}

inline cudaError_t launchError(cudaError_t err)
{
    tLastError = err;
    return err;
}

// `value` as the parameter type T: only the conversions a function call makes implicitly.
template <typename T>
T implicitly(T value)
{
    return value;
}

// kernel<<<grid, block, smem, stream>>>(args...): the arguments are converted to the kernel's parameter types
// once, as the CUDA launch copies them, and every thread calls the kernel with that copy.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t /*stream*/, Args&&... args)
{
    Runtime& rt = runtime();
    uint64_t const threads = uint64_t(block.x) * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0
        || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    {
        launchError(cudaErrorInvalidConfiguration);
        return;
    }
    size_t allowed = kDefaultDynamicSmem;
    {
        auto& attrs = rt.maxDynamicSmem[tDevice];
        auto const it = attrs.find(reinterpret_cast<void const*>(kernel));
        if (it != attrs.end())
            allowed = size_t(it->second);
    }
    if (smem > allowed)
    {
        launchError(cudaErrorInvalidValue); // what the driver reports for too much dynamic shared memory
        return;
    }
    // One closure member per argument, converted as a call converts it. (A std::tuple of the ahead-of-time kernel's
    // 74 parameters made g++'s -Wsequence-point take half a minute on this file.)
    auto const call = [kernel, ... p = implicitly<std::decay_t<Params>>(std::forward<Args>(args))] { kernel(p...); };
    std::lock_guard<std::mutex> lock(rt.launchMutex);
    {
        std::lock_guard<std::mutex> record(rt.recordMutex);
        rt.launches.push_back({grid, block, smem});
    }
    rt.dynamicSmem.assign(smem + kGuardBytes, 0);
    std::function<void()> const body = call;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x)
            {
                std::memset(rt.dynamicSmem.data(), 0xFF, smem + kGuardBytes);
                rt.runner.run(block, grid, uint3{x, y, z}, body);
                for (size_t i = smem; i < smem + kGuardBytes; ++i)
                    if (rt.dynamicSmem[i] != 0xFF)
                        die("a block wrote past the end of its dynamic shared memory");
            }
}

inline void syncthreads()
{
    runtime().runner.blockBarrier().arriveAndWait();
}

template <typename T>
T shflXor(unsigned mask, T value, int laneMask, int width)
{
    static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable<T>::value, "shuffle of a small type");
    if (mask != 0xffffffffu)
        die("__shfl_xor_sync: the host execution supports full-warp masks only");
    ThreadState& t = tThread;
    Warp& w = *t.warp;
    uint64_t* const slots = w.slots[t.shuffles++ % 2];
    int const src = t.lane ^ laneMask;
    std::memcpy(&slots[t.lane], &value, sizeof(T));
    w.barrier.arriveAndWait();
    T result = value;
    if (laneMask >= 0 && (src / width) == (t.lane / width) && src < kWarpSize)
        std::memcpy(&result, &slots[src], sizeof(T));
    return result;
}

} // namespace cuda_host

#define threadIdx (::cuda_host::tThread.threadIdx)
#define blockIdx (::cuda_host::tThread.blockIdx)
#define blockDim (::cuda_host::tThread.blockDim)
#define gridDim (::cuda_host::tThread.gridDim)

inline void __syncthreads()
{
    ::cuda_host::syncthreads();
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int laneMask, int width = ::cuda_host::kWarpSize)
{
    return ::cuda_host::shflXor(mask, value, laneMask, width);
}

// Device-side integer min/max as CUDA defines them.
using std::max;
using std::min;

// The CUDA runtime API calls of the kernels' host code, on the host devices above.
extern "C" {

cudaError_t cudaGetDevice(int* device)
{
    *device = ::cuda_host::tDevice;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    if (device < 0 || device >= ::cuda_host::kDeviceCount)
        return ::cuda_host::launchError(cudaErrorInvalidDevice);
    ::cuda_host::tDevice = device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* count)
{
    *count = ::cuda_host::kDeviceCount;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device)
{
    if (device < 0 || device >= ::cuda_host::kDeviceCount)
        return ::cuda_host::launchError(cudaErrorInvalidDevice);
    ::cuda_host::DeviceSpec const& d = ::cuda_host::kDevices[device];
    switch (attr)
    {
    case cudaDevAttrMultiProcessorCount: *value = d.sms; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = d.smemOptin; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = d.smemPerSm; return cudaSuccess;
    case cudaDevAttrReservedSharedMemoryPerBlock: *value = d.smemReserved; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(::cuda_host::kDefaultDynamicSmem); return cudaSuccess;
    case cudaDevAttrWarpSize: *value = ::cuda_host::kWarpSize; return cudaSuccess;
    default: return ::cuda_host::launchError(cudaErrorInvalidValue);
    }
}

cudaError_t cudaFuncSetAttribute(void const* func, cudaFuncAttribute attr, int value)
{
    ::cuda_host::DeviceSpec const& d = ::cuda_host::kDevices[::cuda_host::tDevice];
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > d.smemOptin)
        return ::cuda_host::launchError(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(::cuda_host::runtime().recordMutex);
    ::cuda_host::runtime().maxDynamicSmem[::cuda_host::tDevice][func] = value;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t const err = ::cuda_host::tLastError;
    ::cuda_host::tLastError = cudaSuccess;
    return err;
}

char const* cudaGetErrorString(cudaError_t err)
{
    switch (err)
    {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "unknown error";
    }
}

// For tests: the devices, and the launches made since the last reset.
CUDA_HOST_API int cuda_host_device_count(void)
{
    return ::cuda_host::kDeviceCount;
}

CUDA_HOST_API char const* cuda_host_device_name(int device)
{
    return device >= 0 && device < ::cuda_host::kDeviceCount ? ::cuda_host::kDevices[device].name : "";
}

CUDA_HOST_API int cuda_host_set_device(int device)
{
    return int(cudaSetDevice(device));
}

CUDA_HOST_API void cuda_host_reset_launches(void)
{
    std::lock_guard<std::mutex> lock(::cuda_host::runtime().recordMutex);
    ::cuda_host::runtime().launches.clear();
}

// Launch i since the reset: blocks in the grid (or -1 past the end) and its dynamic shared memory bytes.
CUDA_HOST_API int64_t cuda_host_launch_blocks(int i, size_t* smem)
{
    std::lock_guard<std::mutex> lock(::cuda_host::runtime().recordMutex);
    auto const& launches = ::cuda_host::runtime().launches;
    if (i < 0 || size_t(i) >= launches.size())
        return -1;
    ::cuda_host::LaunchRecord const& r = launches[size_t(i)];
    if (smem != nullptr)
        *smem = r.smem;
    return int64_t(r.grid.x) * r.grid.y * r.grid.z;
}

// Launch i since the reset: threads per block (or -1 past the end).
CUDA_HOST_API int64_t cuda_host_launch_threads(int i)
{
    std::lock_guard<std::mutex> lock(::cuda_host::runtime().recordMutex);
    auto const& launches = ::cuda_host::runtime().launches;
    if (i < 0 || size_t(i) >= launches.size())
        return -1;
    dim3 const& b = launches[size_t(i)].block;
    return int64_t(b.x) * b.y * b.z;
}

} // extern "C"

// cuda_runtime.h's overload for kernel pointers (defined there for nvcc only).
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute attr, int value)
{
    return cudaFuncSetAttribute(reinterpret_cast<void const*>(kernel), attr, value);
}
