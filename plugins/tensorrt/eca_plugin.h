// TensorRT plugin for the ECA op (name "ECA", version "2", namespace "eca_deploy"): an IPluginV3 with the OneCore,
// OneBuild and OneRuntime capabilities, and its IPluginCreatorV3One. The math lives in ../kernels (eca_kernels.h).
// Inputs: X, optionally the residual (same shape, type and format); fields: weights, bias, padding, gate and
// activation (absent ones take the op's defaults), and field_set: the hash of the op contract's field set
// (eca_deploy/ops/contract.py plugin_field_set_hash), which every node and plan must carry and match, so that a
// library built from other sources never reads fields it does not know as the op it computes.
#pragma once

#include <NvInferRuntime.h>

#include <string>
#include <vector>

namespace eca_deploy
{

constexpr char const* kPluginName = "ECA";
constexpr char const* kPluginVersion = "2"; // ECA_PLUGIN_VERSION of the contract
constexpr char const* kPluginNamespace = "eca_deploy";
constexpr char const* kWeightsField = "weights";
constexpr char const* kBiasField = "bias";
constexpr char const* kPaddingField = "padding";
constexpr char const* kGateField = "gate";
constexpr char const* kActivationField = "activation";
constexpr char const* kFieldSetField = "field_set";
constexpr int32_t kNbFields = 6;

// "ECA/2 weights:f32[] bias:f32 padding:zeros|circular gate:... activation:... inputs:X,residual?", built from the
// tables the fields are parsed with; and its 64-bit FNV-1a as 16 hex digits (what nodes and plans carry).
std::string const& fieldSetSignature();
char const* fieldSetHash() noexcept;

// The op's attributes besides the weights (docs/eca_op.md); the defaults are the op of plugin fields that predate them.
struct EcaAttributes
{
    float bias = 0.f;
    int32_t padding = 0;    // eca_padding_t: index in {"zeros", "circular"}
    int32_t gate = 0;       // eca_gate_t: index in {"sigmoid", "hard_sigmoid"}
    int32_t activation = 0; // eca_activation_t: index in {"none", "relu"}
};

// Logs through the logger TensorRT hands to the library (setLoggerFinder), else to stderr.
void logMessage(nvinfer1::ILogger::Severity severity, char const* format, ...) noexcept;

class EcaPlugin final : public nvinfer1::IPluginV3,
                        public nvinfer1::IPluginV3OneCore,
                        public nvinfer1::IPluginV3OneBuild,
                        public nvinfer1::IPluginV3OneRuntime
{
public:
    EcaPlugin(std::vector<float> weights, EcaAttributes attributes);
    EcaPlugin(EcaPlugin const&) = delete; // mField points into mWeights: copies go through clone()
    EcaPlugin& operator=(EcaPlugin const&) = delete;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getMetadataString() noexcept override { return mMetadata.c_str(); }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    std::vector<float> mWeights;
    EcaAttributes mAttributes;
    std::string mMetadata;
    int32_t mNbInputs = 1; // X, or X and the residual (set by onShapeChange, read by enqueue)
    nvinfer1::PluginField mFieldData[kNbFields];
    nvinfer1::PluginFieldCollection mFields;
};

class EcaPluginCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    EcaPluginCreator();
    EcaPluginCreator(EcaPluginCreator const&) = delete;
    EcaPluginCreator& operator=(EcaPluginCreator const&) = delete;

    char const* getPluginName() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldNames; }
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    nvinfer1::PluginField mFieldData[kNbFields];
    nvinfer1::PluginFieldCollection mFieldNames;
};

} // namespace eca_deploy
