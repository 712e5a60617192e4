// The ONNX Runtime custom-op library: the eca_deploy.ECA node on ONNX Runtime's CPU execution provider, run by the
// CPU kernel of plugins/cpu (NCHW, float32 and float16 I/O) over ONNX Runtime's own intra-op thread pool.
//
//   sess_options.register_custom_ops_library("libeca_onnxruntime_op.so")    (Python)
//   Ort::SessionOptions::RegisterCustomOpsLibrary(...)                      (C++)
//
// ONNX Runtime then runs each ECA node with this kernel instead of expanding the model's ONNX function; without the
// library the function runs (same results within float32 rounding). The op contract is docs/eca_op.md.
//
// A second op, eca_deploy.ECANchwc (float32), is ECA on ONNX Runtime's blocked NCHWc layout: X, residual and Y are
// [N, Cp, H, W] tensors holding [N][Cp/B][H][W][B] data, Cp = C rounded up to B, with ECA's attributes plus
// `channels` (C) and `block` (B). eca-deploy's runner puts it in ONNX Runtime's optimised graph in place of the ECA
// nodes that ONNX Runtime surrounds with layout reorders (eca_deploy/backends/onnxruntime_layout.py).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "eca_cpu_kernel.h"
#include "ort_abi.h"

#ifndef ECA_ORT_BUILD_INFO
#define ECA_ORT_BUILD_INFO "unknown"
#endif

namespace eca_deploy::ort
{
namespace
{

using cpu::code_of;
using cpu::kActivations;
using cpu::kGates;
using cpu::kPaddings;

// ECA on ONNX Runtime's blocked NCHWc layout (float32): what the runner puts where ONNX Runtime reorders around ECA.
constexpr char const* kBlockedOpName = "ECANchwc";
constexpr char const* kBlockedOp = "eca_deploy.ECANchwc";

// The API table, set once by RegisterCustomOps; ParallelFor stays null on ONNX Runtime older than 1.17.
OrtApi const* g_table = nullptr;
KernelContextParallelForFn g_parallel_for = nullptr;

Api api()
{
    return Api(g_table);
}

Status error(std::string const& message)
{
    return api().get<CreateStatusFn>(slot::CreateStatus)(ORT_INVALID_ARGUMENT, message.c_str());
}

void release(Status status)
{
    if (status != nullptr)
    {
        api().get<ReleaseStatusFn>(slot::ReleaseStatus)(status);
    }
}

// A string attribute, or `fallback` when the node has none.
std::string string_attribute(OrtKernelInfo const* info, char const* name, char const* fallback)
{
    auto const get = api().get<KernelInfoGetAttributeStringFn>(slot::KernelInfoGetAttribute_string);
    size_t size = 0;
    Status status = get(info, name, nullptr, &size);
    if (status != nullptr || size == 0)
    {
        release(status);
        return fallback;
    }
    std::string value(size, '\0');
    status = get(info, name, value.data(), &size);
    if (status != nullptr)
    {
        release(status);
        return fallback;
    }
    value.resize(std::strlen(value.c_str()));
    return value;
}

Status read_params(OrtKernelInfo const* info, std::string const& op, cpu::EcaParams& p)
{
    auto const get_floats = api().get<KernelInfoGetAttributeArrayFloatFn>(slot::KernelInfoGetAttributeArray_float);
    size_t k = 0;
    Status status = get_floats(info, "weights", nullptr, &k);
    if (status != nullptr)
    {
        release(status);
        return error(op + " needs the 'weights' attribute (FLOATS)");
    }
    if (k % 2 != 1 || k > static_cast<size_t>(cpu::kMaxTaps))
    {
        return error(op + ": 'weights' must hold an odd number of taps between 1 and 63, got " + std::to_string(k));
    }
    p.weights.resize(k);
    if ((status = get_floats(info, "weights", p.weights.data(), &k)) != nullptr)
    {
        return status;
    }
    float bias = 0.0f;
    status = api().get<KernelInfoGetAttributeFloatFn>(slot::KernelInfoGetAttribute_float)(info, "bias", &bias);
    bool const has_bias = status == nullptr;
    release(status);
    p.bias = has_bias ? bias : 0.0f; // absent: the default, 0
    std::string const padding = string_attribute(info, "padding", kPaddings[0]);
    std::string const gate = string_attribute(info, "gate", kGates[0]);
    std::string const activation = string_attribute(info, "activation", kActivations[0]);
    int const codes[3] = {code_of(padding, kPaddings), code_of(gate, kGates), code_of(activation, kActivations)};
    if (codes[0] < 0 || codes[1] < 0 || codes[2] < 0)
    {
        return error(op + ": unknown attribute value (padding \"" + padding + "\", gate \"" + gate
            + "\", activation \"" + activation + "\")");
    }
    p.padding = static_cast<cpu::Padding>(codes[0]);
    p.gate = static_cast<cpu::Gate>(codes[1]);
    p.activation = static_cast<cpu::Activation>(codes[2]);
    return nullptr;
}

// IEEE half <-> float, round to nearest even (float16 I/O: float32 inside, rounded once at the end).
float half_to_float(uint16_t h)
{
    uint32_t const sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits = 0;
    if (exponent == 0x1f)
    {
        bits = sign | 0x7f800000u | (mantissa << 13); // inf, nan
    }
    else if (exponent != 0)
    {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    }
    else if (mantissa != 0)
    {
        exponent = 113; // subnormal: normalise
        while ((mantissa & 0x400u) == 0)
        {
            mantissa <<= 1;
            --exponent;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
    else
    {
        bits = sign;
    }
    float f = 0.0f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t float_to_half(float f)
{
    uint32_t bits = 0;
    std::memcpy(&bits, &f, sizeof bits);
    uint16_t const sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
    uint32_t const magnitude = bits & 0x7fffffffu;
    if (magnitude >= 0x7f800000u)
    {
        return sign | (magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u); // nan, inf
    }
    if (magnitude >= 0x477ff000u)
    {
        return sign | 0x7c00u; // rounds past the largest half: inf
    }
    if (magnitude < 0x38800000u)
    {
        // Subnormal or zero: the float's value in units of 2^-24, rounded to nearest even.
        float const scaled = std::fabs(f) * 16777216.0f;
        float const rounded = std::nearbyint(scaled);
        return sign | static_cast<uint16_t>(rounded);
    }
    uint32_t const rebased = magnitude - 0x38000000u; // exponent bias 127 -> 15
    uint32_t const round_bit = 0x1000u;
    uint32_t half = rebased >> 13;
    uint32_t const rest = rebased & 0x1fffu;
    if (rest > round_bit || (rest == round_bit && (half & 1u)))
    {
        ++half;
    }
    return sign | static_cast<uint16_t>(half);
}

// The ECANchwc node's layout attributes: `channels` (C, at least 1) and `block` (B, 1 to kMaxBlock).
Status read_layout(OrtKernelInfo const* info, size_t& channels, size_t& block)
{
    auto const get = api().get<KernelInfoGetAttributeInt64Fn>(slot::KernelInfoGetAttribute_int64);
    int64_t values[2] = {0, 0};
    char const* const names[2] = {"channels", "block"};
    for (int i = 0; i < 2; ++i)
    {
        if (Status status = get(info, names[i], &values[i]); status != nullptr)
        {
            release(status);
            return error(std::string(kBlockedOp) + " needs the '" + names[i] + "' attribute (INT)");
        }
    }
    if (values[0] < 1 || values[1] < 1 || values[1] > static_cast<int64_t>(cpu::kMaxBlock))
    {
        return error(std::string(kBlockedOp) + ": 'channels' must be at least 1 and 'block' between 1 and "
            + std::to_string(cpu::kMaxBlock) + ", got " + std::to_string(values[0]) + " and "
            + std::to_string(values[1]));
    }
    channels = static_cast<size_t>(values[0]);
    block = static_cast<size_t>(values[1]);
    return nullptr;
}

struct Kernel
{
    cpu::EcaParams params;
    size_t threads = 1;
    size_t channels = 0; // ECANchwc: C and B
    size_t block = 0;
};

// One call's tasks, for ONNX Runtime's ParallelFor (or a plain loop).
struct Call
{
    cpu::EcaParams const* params;
    cpu::TaskGrid const* grid;
    float const* x;
    float const* residual;
    float* y;
    cpu::BlockedGeometry const* blocked; // null: NCHW

    void run(size_t task) const
    {
        if (blocked != nullptr)
        {
            cpu::eca_blocked_task(*params, *blocked, *grid, x, residual, y, task);
        }
        else
        {
            cpu::eca_task(*params, *grid, x, residual, y, task);
        }
    }
};

void run_task(void* data, size_t task)
{
    static_cast<Call const*>(data)->run(task);
}

// The element type and shape of a tensor value.
Status describe(OrtValue const* value, ElementType& type, std::vector<int64_t>& dims)
{
    Api const a = api();
    OrtTensorTypeAndShapeInfo* info = nullptr;
    Status status = a.get<GetTensorTypeAndShapeFn>(slot::GetTensorTypeAndShape)(value, &info);
    if (status != nullptr)
    {
        return status;
    }
    size_t rank = 0;
    if ((status = a.get<GetTensorElementTypeFn>(slot::GetTensorElementType)(info, &type)) == nullptr
        && (status = a.get<GetDimensionsCountFn>(slot::GetDimensionsCount)(info, &rank)) == nullptr)
    {
        dims.resize(rank);
        status = a.get<GetDimensionsFn>(slot::GetDimensions)(info, dims.data(), rank);
    }
    a.get<ReleaseTensorTypeAndShapeInfoFn>(slot::ReleaseTensorTypeAndShapeInfo)(info);
    return status;
}

// The call's tasks over ONNX Runtime's intra-op threads (on the calling thread before ONNX Runtime 1.17).
Status run(OrtKernelContext* context, Call const& call)
{
    size_t const count = call.grid->count();
    if (count > 1 && g_parallel_for != nullptr)
    {
        return g_parallel_for(context, run_task, count, 0, const_cast<Call*>(&call));
    }
    for (size_t task = 0; task < count; ++task)
    {
        call.run(task);
    }
    return nullptr;
}

// A call's tensors: X's element type and shape, and the data of X, of the residual (null without one) and of Y.
struct Tensors
{
    ElementType type = kUndefined;
    std::vector<int64_t> dims;
    void* x = nullptr;
    void* r = nullptr;
    void* y = nullptr;
};

// Reads X and the optional residual (X's type and shape), after `check` accepts X's type and shape, and makes Y
// with X's shape.
template <typename Check>
Status bind(OrtKernelContext* context, char const* op, Check const& check, Tensors& t)
{
    Api const a = api();
    size_t inputs = 0;
    Status status = a.get<KernelContextGetInputCountFn>(slot::KernelContext_GetInputCount)(context, &inputs);
    if (status != nullptr)
    {
        return status;
    }
    auto const get_input = a.get<KernelContextGetInputFn>(slot::KernelContext_GetInput);
    OrtValue const* x_value = nullptr;
    OrtValue const* r_value = nullptr;
    if ((status = get_input(context, 0, &x_value)) != nullptr
        || (inputs > 1 && (status = get_input(context, 1, &r_value)) != nullptr)
        || (status = describe(x_value, t.type, t.dims)) != nullptr || (status = check(t.type, t.dims)) != nullptr)
    {
        return status;
    }
    if (r_value != nullptr)
    {
        ElementType r_type = kUndefined;
        std::vector<int64_t> r_dims;
        if ((status = describe(r_value, r_type, r_dims)) != nullptr)
        {
            return status;
        }
        if (r_type != t.type || r_dims != t.dims)
        {
            return error(std::string(op) + ": the residual must have X's type and shape");
        }
    }
    OrtValue* y_value = nullptr;
    auto const get_output = a.get<KernelContextGetOutputFn>(slot::KernelContext_GetOutput);
    if ((status = get_output(context, 0, t.dims.data(), t.dims.size(), &y_value)) != nullptr)
    {
        return status;
    }
    auto const data = a.get<GetTensorMutableDataFn>(slot::GetTensorMutableData);
    // GetTensorMutableData takes a non-const OrtValue; the inputs are only read.
    if ((status = data(const_cast<OrtValue*>(x_value), &t.x)) != nullptr
        || (r_value != nullptr && (status = data(const_cast<OrtValue*>(r_value), &t.r)) != nullptr))
    {
        return status;
    }
    return data(y_value, &t.y);
}

Status compute(void* kernel_data, OrtKernelContext* context)
{
    auto const* kernel = static_cast<Kernel const*>(kernel_data);
    Tensors t;
    auto const check = [](ElementType type, std::vector<int64_t> const& dims) -> Status {
        if ((type != kFloat && type != kFloat16) || dims.size() != 4)
        {
            return error("eca_deploy.ECA (ONNX Runtime CPU kernel): X must be a float32 or float16 [N,C,H,W] tensor");
        }
        return nullptr;
    };
    if (Status status = bind(context, "eca_deploy.ECA", check, t); status != nullptr)
    {
        return status;
    }
    cpu::Geometry const g{static_cast<size_t>(t.dims[0]), static_cast<size_t>(t.dims[1]),
        static_cast<size_t>(t.dims[2]) * static_cast<size_t>(t.dims[3])};
    cpu::TaskGrid const grid(g, kernel->params.half(), kernel->threads);
    if (t.type == kFloat)
    {
        auto const* r = static_cast<float const*>(t.r);
        return run(context, Call{&kernel->params, &grid, static_cast<float const*>(t.x), r, static_cast<float*>(t.y),
                                nullptr});
    }
    // float16: float32 inside, rounded once at the end (the contract's numerics).
    size_t const count = g.n * g.c * g.hw;
    std::vector<float> xf(count);
    std::vector<float> rf(t.r != nullptr ? count : 0);
    std::vector<float> yf(count);
    for (size_t i = 0; i < count; ++i)
    {
        xf[i] = half_to_float(static_cast<uint16_t const*>(t.x)[i]);
    }
    for (size_t i = 0; i < rf.size(); ++i)
    {
        rf[i] = half_to_float(static_cast<uint16_t const*>(t.r)[i]);
    }
    Call const call{&kernel->params, &grid, xf.data(), t.r != nullptr ? rf.data() : nullptr, yf.data(), nullptr};
    if (Status status = run(context, call); status != nullptr)
    {
        return status;
    }
    for (size_t i = 0; i < count; ++i)
    {
        static_cast<uint16_t*>(t.y)[i] = float_to_half(yf[i]);
    }
    return nullptr;
}

// ECANchwc: X, residual and Y float32 [N, Cp, H, W] holding ONNX Runtime's blocked layout, Cp = C rounded up to B.
Status compute_blocked(void* kernel_data, OrtKernelContext* context)
{
    auto const* kernel = static_cast<Kernel const*>(kernel_data);
    size_t const padded = (kernel->channels + kernel->block - 1) / kernel->block * kernel->block;
    Tensors t;
    auto const check = [padded](ElementType type, std::vector<int64_t> const& dims) -> Status {
        if (type != kFloat || dims.size() != 4 || dims[1] != static_cast<int64_t>(padded))
        {
            return error(std::string(kBlockedOp) + ": X must be a float32 [N," + std::to_string(padded)
                + ",H,W] tensor (the attribute 'channels' rounded up to 'block')");
        }
        return nullptr;
    };
    if (Status status = bind(context, kBlockedOp, check, t); status != nullptr)
    {
        return status;
    }
    cpu::BlockedGeometry const g{static_cast<size_t>(t.dims[0]), kernel->channels,
        static_cast<size_t>(t.dims[2]) * static_cast<size_t>(t.dims[3]), kernel->block};
    cpu::TaskGrid const grid = cpu::blocked_grid(g, kernel->params.half(), kernel->threads);
    auto const* r = static_cast<float const*>(t.r);
    return run(context, Call{&kernel->params, &grid, static_cast<float const*>(t.x), r, static_cast<float*>(t.y), &g});
}

Status create_kernel(OrtKernelInfo const* info, bool blocked, void** kernel)
{
    auto made = new Kernel();
    made->threads = std::max(1u, std::thread::hardware_concurrency());
    Status status = read_params(info, blocked ? kBlockedOp : "eca_deploy.ECA", made->params);
    if (status == nullptr && blocked)
    {
        status = read_layout(info, made->channels, made->block);
    }
    if (status != nullptr)
    {
        delete made;
        return status;
    }
    *kernel = made;
    return nullptr;
}

// The op's description for ONNX Runtime (OrtCustomOp version kCustomOpVersion), one per name and element type:
// ONNX Runtime merges same-named ops into one schema and picks the kernel by the node's type.
template <ElementType kType, bool kBlocked>
OrtCustomOp make_op()
{
    OrtCustomOp op{};
    op.version = kCustomOpVersion;
    op.CreateKernel = nullptr; // V2 below
    op.GetName = [](OrtCustomOp const*) { return kBlocked ? kBlockedOpName : "ECA"; };
    op.GetExecutionProviderType = [](OrtCustomOp const*) { return "CPUExecutionProvider"; };
    op.GetInputType = [](OrtCustomOp const*, size_t) { return kType; };
    op.GetInputTypeCount = [](OrtCustomOp const*) -> size_t { return 2; };
    op.GetOutputType = [](OrtCustomOp const*, size_t) { return kType; };
    op.GetOutputTypeCount = [](OrtCustomOp const*) -> size_t { return 1; };
    op.KernelCompute = nullptr; // V2 below
    op.KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
    op.GetInputCharacteristic = [](OrtCustomOp const*, size_t index) {
        return index == 0 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL; // X, residual?
    };
    op.GetOutputCharacteristic = [](OrtCustomOp const*, size_t) { return INPUT_OUTPUT_REQUIRED; };
    op.GetInputMemoryType = [](OrtCustomOp const*, size_t) { return OrtMemTypeDefault; };
    op.GetVariadicInputMinArity = [](OrtCustomOp const*) { return 1; };
    op.GetVariadicInputHomogeneity = [](OrtCustomOp const*) { return 1; };
    op.GetVariadicOutputMinArity = [](OrtCustomOp const*) { return 1; };
    op.GetVariadicOutputHomogeneity = [](OrtCustomOp const*) { return 1; };
    op.CreateKernelV2 = [](OrtCustomOp const*, OrtApi const*, OrtKernelInfo const* info, void** kernel) -> Status {
        return create_kernel(info, kBlocked, kernel);
    };
    op.KernelComputeV2 = kBlocked ? compute_blocked : compute;
    return op;
}

OrtCustomOp const g_eca_ops[3] = {
    make_op<kFloat, false>(), make_op<kFloat16, false>(), make_op<kFloat, true>()};

} // namespace
} // namespace eca_deploy::ort

using namespace eca_deploy::ort;

// Whether ONNX Runtime's version string ("1.17.3") is at least major.minor.
static bool version_at_least(char const* version, int major, int minor)
{
    int have_major = 0;
    int have_minor = 0;
    if (version == nullptr || std::sscanf(version, "%d.%d", &have_major, &have_minor) != 2)
    {
        return false;
    }
    return have_major > major || (have_major == major && have_minor >= minor);
}

// The library's entry point, called by ONNX Runtime's RegisterCustomOpsLibrary. Requests the API of ONNX Runtime
// 1.17 (for ParallelFor) where the version says it has it, else 1.16 (then the kernel runs on the calling thread);
// older versions get an error. (Asking an older ONNX Runtime for a newer API logs an error, hence the check.)
extern "C" __attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(
    OrtSessionOptions* options, OrtApiBase const* base)
{
    bool const parallel = version_at_least(base->GetVersionString(), 1, 17);
    OrtApi const* table = base->GetApi(parallel ? kParallelForApiVersion : kMinApiVersion);
    if (table == nullptr)
    {
        return Api(base->GetApi(1)).get<CreateStatusFn>(slot::CreateStatus)(
            ORT_FAIL, "libeca_onnxruntime_op needs ONNX Runtime 1.16 or newer");
    }
    g_table = table;
    g_parallel_for = parallel ? api().get<KernelContextParallelForFn>(slot::KernelContext_ParallelFor) : nullptr;
    OrtCustomOpDomain* domain = nullptr;
    Status status = api().get<CreateCustomOpDomainFn>(slot::CreateCustomOpDomain)("eca_deploy", &domain);
    for (OrtCustomOp const& op : g_eca_ops)
    {
        if (status == nullptr)
        {
            status = api().get<CustomOpDomainAddFn>(slot::CustomOpDomain_Add)(domain, &op);
        }
    }
    if (status == nullptr)
    {
        status = api().get<AddCustomOpDomainFn>(slot::AddCustomOpDomain)(options, domain);
    }
    // The domain must outlive every session made with these options: it is kept for the life of the process.
    return status;
}

extern "C" __attribute__((visibility("default"))) char const* eca_onnxruntime_build_info()
{
    return "eca_onnxruntime_op " ECA_ORT_BUILD_INFO;
}
