// The OpenVINO extension library: the ECA op and the ONNX frontend conversion of eca_deploy.ECA nodes onto it.
//   core.add_extension("libeca_openvino_extension.so")   (Python: openvino.Core().add_extension(path))
#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/frontend/exception.hpp>
#include <openvino/frontend/onnx/extension/conversion.hpp>

#include <string>
#include <vector>

#include "eca_op.h"

namespace
{

// The ONNX frontend hands FLOAT(S) attributes over as float or double depending on the decoder: take either.
std::vector<float> float_list(ov::Any const& any)
{
    if (any.is<std::vector<double>>())
    {
        auto const& values = any.as<std::vector<double>>();
        return std::vector<float>(values.begin(), values.end());
    }
    return any.as<std::vector<float>>();
}

float float_value(ov::frontend::NodeContext const& node, std::string const& name, float def)
{
    ov::Any const any = node.get_attribute_as_any(name);
    if (any.empty())
    {
        return def;
    }
    return any.is<double>() ? static_cast<float>(any.as<double>()) : any.as<float>();
}

ov::OutputVector convert_onnx_eca(ov::frontend::NodeContext const& node)
{
    size_t const inputs = node.get_input_size();
    FRONT_END_GENERAL_CHECK(inputs == 1 || inputs == 2, "eca_deploy.ECA takes X and an optional residual, got ",
        inputs, " inputs");
    FRONT_END_GENERAL_CHECK(node.has_attribute("weights"), "eca_deploy.ECA needs the 'weights' attribute");
    auto weights = float_list(node.get_attribute_as_any("weights"));
    auto bias = float_value(node, "bias", 0.0f);
    auto padding = node.get_attribute<std::string>("padding", "zeros");
    auto gate = node.get_attribute<std::string>("gate", "sigmoid");
    auto activation = node.get_attribute<std::string>("activation", "none");
    ov::OutputVector args{node.get_input(0)};
    if (inputs == 2)
    {
        args.push_back(node.get_input(1));
    }
    auto op = std::make_shared<eca_deploy::EcaOp>(args, weights, bias, padding, gate, activation);
    return op->outputs();
}

} // namespace

extern "C" OPENVINO_EXTENSION_API char const* eca_openvino_build_info()
{
    return "eca_openvino_extension " ECA_OV_BUILD_INFO;
}

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    std::make_shared<ov::OpExtension<eca_deploy::EcaOp>>(),
    std::make_shared<ov::frontend::onnx::ConversionExtension>("ECA", "eca_deploy", convert_onnx_eca),
}));
