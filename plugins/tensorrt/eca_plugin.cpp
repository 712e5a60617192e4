#include "eca_plugin.h"

#include "eca_kernels.h"

#include <cstring>
#include <exception>
#include <utility>

using namespace nvinfer1;

namespace eca_deploy
{
namespace
{

bool isSupportedType(DataType type)
{
    return type == DataType::kFLOAT || type == DataType::kHALF;
}

eca_dtype_t toEcaDtype(DataType type)
{
    return type == DataType::kHALF ? ECA_DTYPE_FLOAT16 : ECA_DTYPE_FLOAT32;
}

constexpr int32_t kRank = 4;

// One input X [N,C,H,W] and one output Y of the same shape.
bool isEcaSignature(int32_t nbInputs, int32_t nbOutputs, int32_t inputRank = kRank)
{
    if (nbInputs == 1 && nbOutputs == 1 && inputRank == kRank)
        return true;
    logMessage(ILogger::Severity::kERROR, "ECA: expected one 4-D input [N,C,H,W] and one output, got %d input(s) of "
        "rank %d and %d output(s)", nbInputs, inputRank, nbOutputs);
    return false;
}

} // namespace

EcaPlugin::EcaPlugin(std::vector<float> weights)
    : mWeights(std::move(weights))
    , mMetadata("k=" + std::to_string(mWeights.size()))
    , mField(kWeightsField, mWeights.data(), PluginFieldType::kFLOAT32, int32_t(mWeights.size()))
    , mFields{1, &mField}
{
}

IPluginCapability* EcaPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* EcaPlugin::clone() noexcept
{
    try
    {
        return new EcaPlugin(mWeights);
    }
    catch (std::exception const& e)
    {
        logMessage(ILogger::Severity::kERROR, "ECA: cannot clone the plugin: %s", e.what());
        return nullptr;
    }
}

int32_t EcaPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (!isEcaSignature(nbInputs, nbOutputs)) // the rank is checked with the shapes
        return -1;
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t EcaPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept
{
    if (!isEcaSignature(nbInputs, nbOutputs, nbInputs == 1 ? inputs[0].nbDims : -1))
        return -1;
    outputs[0] = inputs[0]; // Y has X's shape: the same dimension expressions
    return 0;
}

bool EcaPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > 1)
        return false;
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
        return false;
    return pos == 0 ? isSupportedType(desc.type) : desc.type == inOut[0].desc.type;
}

int32_t EcaPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    return isEcaSignature(nbInputs, nbOutputs, nbInputs == 1 ? in[0].desc.dims.nbDims : -1) ? 0 : -1;
}

size_t EcaPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t nbOutputs) const noexcept
{
    if (nbInputs != 1 || nbOutputs != 1 || inputs[0].max.nbDims != kRank)
        return 0;
    // The two-pass workspace at the profile's largest shape covers every path and every shape of the profile.
    Dims const& m = inputs[0].max;
    return eca_workspace_size(m.d[0], m.d[1], m.d[2], m.d[3], int32_t(mWeights.size()),
        toEcaDtype(inputs[0].desc.type), ECA_PATH_TWO_PASS);
}

int32_t EcaPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    return isEcaSignature(nbInputs, nbOutputs, nbInputs == 1 ? in[0].dims.nbDims : -1) ? 0 : -1;
}

int32_t EcaPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    Dims const& d = inputDesc[0].dims;
    if (d.nbDims != kRank || outputDesc[0].type != inputDesc[0].type || !isSupportedType(inputDesc[0].type))
    {
        logMessage(ILogger::Severity::kERROR, "ECA: enqueue needs a 4-D float32 or float16 input and an output of "
            "the same type");
        return ECA_STATUS_INVALID_ARGUMENT;
    }
    int32_t const status = eca_forward(inputs[0], outputs[0], mWeights.data(), int32_t(mWeights.size()), d.d[0], d.d[1],
        d.d[2], d.d[3], toEcaDtype(inputDesc[0].type), ECA_PATH_AUTO, workspace, stream);
    if (status != ECA_STATUS_OK)
        logMessage(ILogger::Severity::kERROR, "ECA: %s", eca_last_error());
    return status;
}

IPluginV3* EcaPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* EcaPlugin::getFieldsToSerialize() noexcept
{
    return &mFields;
}

EcaPluginCreator::EcaPluginCreator()
    : mWeights(kWeightsField, nullptr, PluginFieldType::kFLOAT32, 0)
    , mFieldNames{1, &mWeights}
{
}

IPluginV3* EcaPluginCreator::createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    char const* layer = name != nullptr ? name : "";
    PluginField const* weights = nullptr;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        PluginField const& field = fc->fields[i];
        if (field.name != nullptr && std::strcmp(field.name, kWeightsField) == 0)
            weights = &field;
        else
            logMessage(ILogger::Severity::kWARNING, "ECA layer '%s': ignoring unknown field '%s'", layer,
                field.name != nullptr ? field.name : "");
    }
    if (weights == nullptr)
    {
        logMessage(ILogger::Severity::kERROR, "ECA layer '%s': missing field 'weights' (float32, an odd count from "
            "1 to %d)", layer, ECA_MAX_K);
        return nullptr;
    }
    if (weights->type != PluginFieldType::kFLOAT32)
    {
        logMessage(ILogger::Severity::kERROR, "ECA layer '%s': field 'weights' must be float32 (kFLOAT32), got "
            "PluginFieldType %d", layer, int(weights->type));
        return nullptr;
    }
    if (weights->data == nullptr || weights->length < 1 || weights->length % 2 == 0 || weights->length > ECA_MAX_K)
    {
        logMessage(ILogger::Severity::kERROR, "ECA layer '%s': field 'weights' has %d value(s); the kernel size must "
            "be odd, 1 to %d", layer, weights->data == nullptr ? 0 : weights->length, ECA_MAX_K);
        return nullptr;
    }
    try
    {
        auto const* w = static_cast<float const*>(weights->data);
        return new EcaPlugin(std::vector<float>(w, w + weights->length));
    }
    catch (std::exception const& e)
    {
        logMessage(ILogger::Severity::kERROR, "ECA layer '%s': cannot create the plugin: %s", layer, e.what());
        return nullptr;
    }
}

} // namespace eca_deploy
