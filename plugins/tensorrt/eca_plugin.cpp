#include "eca_plugin.h"

#include "eca_kernels.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
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

// The string attributes' values, in the order of their eca_kernels.h codes (eca_deploy.ops' tuples).
char const* const kPaddings[] = {"zeros", "circular"};
char const* const kGates[] = {"sigmoid", "hard_sigmoid"};
char const* const kActivations[] = {"none", "relu"};

template <size_t N>
int32_t codeOf(char const* const (&names)[N], std::string const& value)
{
    for (size_t i = 0; i < N; ++i)
        if (value == names[i])
            return int32_t(i);
    return -1;
}

// X [N,C,H,W], optionally the residual, and one output Y of X's shape.
bool isEcaSignature(int32_t nbInputs, int32_t nbOutputs, int32_t inputRank = kRank)
{
    if ((nbInputs == 1 || nbInputs == 2) && nbOutputs == 1 && inputRank == kRank)
        return true;
    logMessage(ILogger::Severity::kERROR, "ECA: expected a 4-D input [N,C,H,W] (and a residual of its shape) and one "
        "output, got %d input(s) of rank %d and %d output(s)", nbInputs, inputRank, nbOutputs);
    return false;
}

bool sameDims(Dims const& a, Dims const& b)
{
    if (a.nbDims != b.nbDims)
        return false;
    for (int32_t i = 0; i < a.nbDims; ++i)
        if (a.d[i] != b.d[i])
            return false;
    return true;
}

// The residual has X's shape (checked where the dimensions are known).
bool residualMatches(PluginTensorDesc const* in, int32_t nbInputs)
{
    if (nbInputs < 2 || sameDims(in[0].dims, in[1].dims))
        return true;
    logMessage(ILogger::Severity::kERROR, "ECA: the residual input must have X's shape");
    return false;
}

PluginField charField(char const* name, char const* value)
{
    return PluginField(name, value, PluginFieldType::kCHAR, int32_t(std::strlen(value) + 1)); // with its NUL
}

template <size_t N>
std::string joined(char const* const (&names)[N])
{
    std::string out;
    for (size_t i = 0; i < N; ++i)
        out += std::string(i ? "|" : "") + names[i];
    return out;
}

} // namespace

std::string const& fieldSetSignature()
{
    static std::string const signature = std::string(kPluginName) + "/" + kPluginVersion + " " + kWeightsField
        + ":f32[] " + kBiasField + ":f32 " + kPaddingField + ":" + joined(kPaddings) + " " + kGateField + ":"
        + joined(kGates) + " " + kActivationField + ":" + joined(kActivations) + " inputs:X,residual?";
    return signature;
}

char const* fieldSetHash() noexcept
{
    static std::string const hash = [] {
        uint64_t value = 0xcbf29ce484222325ull; // FNV-1a, as eca_deploy.ops.contract.plugin_field_set_hash
        for (unsigned char const c : fieldSetSignature())
            value = (value ^ c) * 0x100000001b3ull;
        char hex[17];
        std::snprintf(hex, sizeof(hex), "%016" PRIx64, value);
        return std::string(hex);
    }();
    return hash.c_str();
}

EcaPlugin::EcaPlugin(std::vector<float> weights, EcaAttributes attributes)
    : mWeights(std::move(weights))
    , mAttributes(attributes)
    , mMetadata("k=" + std::to_string(mWeights.size()) + " bias=" + std::to_string(attributes.bias) + " padding="
          + kPaddings[attributes.padding] + " gate=" + kGates[attributes.gate] + " activation="
          + kActivations[attributes.activation])
    , mFieldData{PluginField(kWeightsField, mWeights.data(), PluginFieldType::kFLOAT32, int32_t(mWeights.size())),
          PluginField(kBiasField, &mAttributes.bias, PluginFieldType::kFLOAT32, 1),
          charField(kPaddingField, kPaddings[attributes.padding]), charField(kGateField, kGates[attributes.gate]),
          charField(kActivationField, kActivations[attributes.activation]),
          charField(kFieldSetField, fieldSetHash())} // checked again when the plan is deserialized
    , mFields{kNbFields, mFieldData}
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
        auto* plugin = new EcaPlugin(mWeights, mAttributes);
        plugin->mNbInputs = mNbInputs; // known from configurePlugin/onShapeChange before a runtime clone
        return plugin;
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
    if (nbInputs == 2 && inputTypes[1] != inputTypes[0])
    {
        logMessage(ILogger::Severity::kERROR, "ECA: the residual input must have X's type");
        return -1;
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t EcaPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept
{
    if (!isEcaSignature(nbInputs, nbOutputs, nbInputs >= 1 ? inputs[0].nbDims : -1))
        return -1;
    if (nbInputs == 2 && inputs[1].nbDims != inputs[0].nbDims)
    {
        logMessage(ILogger::Severity::kERROR, "ECA: the residual input must have X's rank");
        return -1;
    }
    outputs[0] = inputs[0]; // Y has X's shape: the same dimension expressions
    return 0;
}

bool EcaPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs < 1 || nbInputs > 2 || nbOutputs != 1 || pos < 0 || pos > nbInputs)
        return false;
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
        return false;
    return pos == 0 ? isSupportedType(desc.type) : desc.type == inOut[0].desc.type; // residual and Y: X's type
}

int32_t EcaPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (!isEcaSignature(nbInputs, nbOutputs, nbInputs >= 1 ? in[0].desc.dims.nbDims : -1))
        return -1;
    if (nbInputs == 2 && (!sameDims(in[0].min, in[1].min) || !sameDims(in[0].max, in[1].max)))
    {
        logMessage(ILogger::Severity::kERROR, "ECA: the residual input must have X's shape range");
        return -1;
    }
    mNbInputs = nbInputs;
    return 0;
}

size_t EcaPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t nbOutputs) const noexcept
{
    if (nbInputs < 1 || nbInputs > 2 || nbOutputs != 1 || inputs[0].max.nbDims != kRank)
        return 0;
    // The two-pass workspace at the profile's largest shape covers every path and every shape of the profile.
    Dims const& m = inputs[0].max;
    return eca_workspace_size(m.d[0], m.d[1], m.d[2], m.d[3], int32_t(mWeights.size()),
        toEcaDtype(inputs[0].desc.type), ECA_PATH_TWO_PASS);
}

int32_t EcaPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (!isEcaSignature(nbInputs, nbOutputs, nbInputs >= 1 ? in[0].dims.nbDims : -1) || !residualMatches(in, nbInputs))
        return -1;
    mNbInputs = nbInputs;
    return 0;
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
    if (mNbInputs == 2 && (inputDesc[1].type != inputDesc[0].type || !sameDims(inputDesc[1].dims, d)))
    {
        logMessage(ILogger::Severity::kERROR, "ECA: enqueue needs a residual of X's shape and type");
        return ECA_STATUS_INVALID_ARGUMENT;
    }
    eca_op_t const op{mWeights.data(), int32_t(mWeights.size()), mAttributes.bias, mAttributes.padding,
        mAttributes.gate, mAttributes.activation};
    int32_t const status = eca_forward_op(inputs[0], mNbInputs == 2 ? inputs[1] : nullptr, outputs[0], &op, d.d[0],
        d.d[1], d.d[2], d.d[3], toEcaDtype(inputDesc[0].type), ECA_PATH_AUTO, workspace, stream);
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
    : mFieldData{PluginField(kWeightsField, nullptr, PluginFieldType::kFLOAT32, 0),
          PluginField(kBiasField, nullptr, PluginFieldType::kFLOAT32, 1),
          PluginField(kPaddingField, nullptr, PluginFieldType::kCHAR, 0),
          PluginField(kGateField, nullptr, PluginFieldType::kCHAR, 0),
          PluginField(kActivationField, nullptr, PluginFieldType::kCHAR, 0),
          PluginField(kFieldSetField, nullptr, PluginFieldType::kCHAR, 0)}
    , mFieldNames{kNbFields, mFieldData}
{
}

namespace
{

// A kCHAR field's string (the ONNX parser passes STRING attributes with a terminating NUL, others may not).
std::string fieldString(PluginField const& field)
{
    auto const* chars = static_cast<char const*>(field.data);
    return chars == nullptr ? std::string() : std::string(chars, strnlen(chars, size_t(std::max(field.length, 0))));
}

// One string attribute into its code; false (with a logged error) for a wrong type or value.
template <size_t N>
bool parseChoice(PluginField const& field, char const* const (&names)[N], char const* layer, int32_t& code)
{
    std::string const value = fieldString(field);
    code = field.type == PluginFieldType::kCHAR ? codeOf(names, value) : -1;
    if (code >= 0)
        return true;
    std::string allowed;
    for (size_t i = 0; i < N; ++i)
        allowed += std::string(i ? ", " : "") + names[i];
    logMessage(ILogger::Severity::kERROR, "ECA layer '%s': field '%s' must be a string (kCHAR), one of %s; got '%s'",
        layer, field.name, allowed.c_str(), value.c_str());
    return false;
}

} // namespace

IPluginV3* EcaPluginCreator::createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    char const* layer = name != nullptr ? name : "";
    PluginField const* weights = nullptr;
    bool fieldSetSeen = false;
    EcaAttributes attributes; // absent fields keep their defaults
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        PluginField const& field = fc->fields[i];
        char const* const name = field.name != nullptr ? field.name : "";
        if (std::strcmp(name, kWeightsField) == 0)
            weights = &field;
        else if (std::strcmp(name, kFieldSetField) == 0)
        {
            std::string const given = field.type == PluginFieldType::kCHAR ? fieldString(field) : std::string("?");
            if (given != fieldSetHash())
            {
                logMessage(ILogger::Severity::kERROR, "ECA layer '%s': field set %s, but this library computes the "
                    "op of field set %s (%s): it is built from other sources than the model or plan; rebuild it with "
                    "`eca-deploy plugin build` (and the engine with `eca-deploy build`)", layer, given.c_str(),
                    fieldSetHash(), fieldSetSignature().c_str());
                return nullptr;
            }
            fieldSetSeen = true;
        }
        else if (std::strcmp(name, kBiasField) == 0)
        {
            if (field.type != PluginFieldType::kFLOAT32 || field.length != 1 || field.data == nullptr)
            {
                logMessage(ILogger::Severity::kERROR, "ECA layer '%s': field 'bias' must be one float32 (kFLOAT32)",
                    layer);
                return nullptr;
            }
            attributes.bias = *static_cast<float const*>(field.data);
        }
        else if (std::strcmp(name, kPaddingField) == 0)
        {
            if (!parseChoice(field, kPaddings, layer, attributes.padding))
                return nullptr;
        }
        else if (std::strcmp(name, kGateField) == 0)
        {
            if (!parseChoice(field, kGates, layer, attributes.gate))
                return nullptr;
        }
        else if (std::strcmp(name, kActivationField) == 0)
        {
            if (!parseChoice(field, kActivations, layer, attributes.activation))
                return nullptr;
        }
        else
            logMessage(ILogger::Severity::kWARNING, "ECA layer '%s': ignoring unknown field '%s'", layer, name);
    }
    if (!fieldSetSeen)
    {
        logMessage(ILogger::Severity::kERROR, "ECA layer '%s': missing field 'field_set' (this library takes %s, the "
            "hash of %s): fuse the model with the eca-deploy this library is built from (`eca-deploy fuse`), or "
            "rebuild the library with `eca-deploy plugin build`", layer, fieldSetHash(), fieldSetSignature().c_str());
        return nullptr;
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
        return new EcaPlugin(std::vector<float>(w, w + weights->length), attributes);
    }
    catch (std::exception const& e)
    {
        logMessage(ILogger::Severity::kERROR, "ECA layer '%s': cannot create the plugin: %s", layer, e.what());
        return nullptr;
    }
}

} // namespace eca_deploy
