// The few pieces of ONNX Runtime's C ABI this library uses, declared here rather than taken from ONNX Runtime's
// headers: the `onnxruntime` wheels ship no C headers, and this library must build wherever the wheel is installed.
//
// Why this is safe: ONNX Runtime's C API is a table of function pointers (OrtApi) reached through
// OrtGetApiBase()->GetApi(version), and that table is append-only: an entry, once released, keeps its slot and its
// signature in every later release (the header says so: "DO NOT MODIFY ABOVE" at the end of each version). So a
// slot number below, with its signature, names the same function in every ONNX Runtime from the version noted on
// it. OrtCustomOp is likewise versioned by its first field: ONNX Runtime reads only the members that existed in
// the version the library writes there (kCustomOpVersion below). The opaque handle types are just pointers.
// Every slot and member used here is exercised by tests/test_onnxruntime_extension.py, which runs the op in real
// InferenceSessions and compares it with the float64 reference: a wrong slot fails there, not silently.
#pragma once

#include <cstddef>
#include <cstdint>

namespace eca_deploy::ort
{

struct OrtStatus;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtValue;
struct OrtTensorTypeAndShapeInfo;
struct OrtSessionOptions;
struct OrtCustomOpDomain;
struct OrtApi;

// ONNX Runtime 1.16 is the first with CreateKernelV2/KernelComputeV2 (errors returned as an OrtStatus);
// KernelContext_ParallelFor (ONNX Runtime's own intra-op thread pool) came with API version 17.
constexpr uint32_t kMinApiVersion = 16;
constexpr uint32_t kParallelForApiVersion = 17;
constexpr uint32_t kCustomOpVersion = 16;

struct OrtApiBase
{
    OrtApi const* (*GetApi)(uint32_t version); // nullptr when this ONNX Runtime is older than `version`
    char const* (*GetVersionString)();
};

enum OrtErrorCode : int { ORT_OK = 0, ORT_FAIL = 1, ORT_INVALID_ARGUMENT = 2 };
enum ElementType : int { kUndefined = 0, kFloat = 1, kFloat16 = 10 };
enum OrtCustomOpInputOutputCharacteristic : int { INPUT_OUTPUT_REQUIRED = 0, INPUT_OUTPUT_OPTIONAL = 1 };
enum OrtMemType : int { OrtMemTypeDefault = 0 };

using Status = OrtStatus*;

// Slot numbers in OrtApi (pointer-sized entries from the start of the table) and the signatures used.
namespace slot
{
constexpr size_t CreateStatus = 0;                        // v1
constexpr size_t GetErrorMessage = 2;                     // v1
constexpr size_t CreateCustomOpDomain = 26;               // v1
constexpr size_t CustomOpDomain_Add = 27;                 // v1
constexpr size_t AddCustomOpDomain = 28;                  // v1
constexpr size_t GetTensorMutableData = 51;               // v1
constexpr size_t GetTensorElementType = 60;               // v1
constexpr size_t GetDimensionsCount = 61;                 // v1
constexpr size_t GetDimensions = 62;                      // v1
constexpr size_t GetTensorTypeAndShape = 65;              // v1
constexpr size_t KernelInfoGetAttribute_float = 85;       // v1
constexpr size_t KernelInfoGetAttribute_int64 = 86;       // v1
constexpr size_t KernelInfoGetAttribute_string = 87;      // v1
constexpr size_t KernelContext_GetInputCount = 88;        // v1
constexpr size_t KernelContext_GetInput = 90;             // v1
constexpr size_t KernelContext_GetOutput = 91;            // v1
constexpr size_t ReleaseStatus = 93;                      // v1
constexpr size_t ReleaseTensorTypeAndShapeInfo = 99;      // v1
constexpr size_t KernelInfoGetAttributeArray_float = 162; // v7 (ONNX Runtime 1.7)
constexpr size_t KernelContext_ParallelFor = 274;         // v17 (ONNX Runtime 1.17)
} // namespace slot

using CreateStatusFn = Status (*)(OrtErrorCode, char const*);
using GetErrorMessageFn = char const* (*) (Status);
using CreateCustomOpDomainFn = Status (*)(char const*, OrtCustomOpDomain**);
using CustomOpDomainAddFn = Status (*)(OrtCustomOpDomain*, struct OrtCustomOp const*);
using AddCustomOpDomainFn = Status (*)(OrtSessionOptions*, OrtCustomOpDomain*);
using GetTensorMutableDataFn = Status (*)(OrtValue*, void**);
using GetTensorElementTypeFn = Status (*)(OrtTensorTypeAndShapeInfo const*, ElementType*);
using GetDimensionsCountFn = Status (*)(OrtTensorTypeAndShapeInfo const*, size_t*);
using GetDimensionsFn = Status (*)(OrtTensorTypeAndShapeInfo const*, int64_t*, size_t);
using GetTensorTypeAndShapeFn = Status (*)(OrtValue const*, OrtTensorTypeAndShapeInfo**);
using KernelInfoGetAttributeFloatFn = Status (*)(OrtKernelInfo const*, char const*, float*);
using KernelInfoGetAttributeInt64Fn = Status (*)(OrtKernelInfo const*, char const*, int64_t*);
using KernelInfoGetAttributeStringFn = Status (*)(OrtKernelInfo const*, char const*, char*, size_t*);
using KernelContextGetInputCountFn = Status (*)(OrtKernelContext const*, size_t*);
using KernelContextGetInputFn = Status (*)(OrtKernelContext const*, size_t, OrtValue const**);
using KernelContextGetOutputFn = Status (*)(OrtKernelContext*, size_t, int64_t const*, size_t, OrtValue**);
using ReleaseStatusFn = void (*)(Status);
using ReleaseTensorTypeAndShapeInfoFn = void (*)(OrtTensorTypeAndShapeInfo*);
using KernelInfoGetAttributeArrayFloatFn = Status (*)(OrtKernelInfo const*, char const*, float*, size_t*);
using KernelContextParallelForFn = Status (*)(OrtKernelContext const*, void (*)(void*, size_t), size_t, size_t, void*);

// The API table as the library sees it: an array of entries, read by slot number.
class Api
{
public:
    explicit Api(OrtApi const* table)
        : m_table(reinterpret_cast<void* const*>(table))
    {
    }

    template <typename Fn>
    Fn get(size_t index) const
    {
        return reinterpret_cast<Fn>(m_table[index]);
    }

private:
    void* const* m_table;
};

// OrtCustomOp up to version 16 (members in ABI order; ONNX Runtime reads the ones of the version in `version`).
struct OrtCustomOp
{
    uint32_t version;
    void* (*CreateKernel)(OrtCustomOp const*, OrtApi const*, OrtKernelInfo const*);
    char const* (*GetName)(OrtCustomOp const*);
    char const* (*GetExecutionProviderType)(OrtCustomOp const*);
    ElementType (*GetInputType)(OrtCustomOp const*, size_t);
    size_t (*GetInputTypeCount)(OrtCustomOp const*);
    ElementType (*GetOutputType)(OrtCustomOp const*, size_t);
    size_t (*GetOutputTypeCount)(OrtCustomOp const*);
    void (*KernelCompute)(void*, OrtKernelContext*);
    void (*KernelDestroy)(void*);
    // version 8
    OrtCustomOpInputOutputCharacteristic (*GetInputCharacteristic)(OrtCustomOp const*, size_t);
    OrtCustomOpInputOutputCharacteristic (*GetOutputCharacteristic)(OrtCustomOp const*, size_t);
    // version 14
    OrtMemType (*GetInputMemoryType)(OrtCustomOp const*, size_t);
    // version 15
    int (*GetVariadicInputMinArity)(OrtCustomOp const*);
    int (*GetVariadicInputHomogeneity)(OrtCustomOp const*);
    int (*GetVariadicOutputMinArity)(OrtCustomOp const*);
    int (*GetVariadicOutputHomogeneity)(OrtCustomOp const*);
    // version 16
    Status (*CreateKernelV2)(OrtCustomOp const*, OrtApi const*, OrtKernelInfo const*, void**);
    Status (*KernelComputeV2)(void*, OrtKernelContext*);
};

} // namespace eca_deploy::ort
