// The OpenVINO extension library: the ECA op and the ONNX frontend conversion of eca_deploy.ECA nodes.
//   core.add_extension("libeca_openvino_extension.so")   (Python: openvino.Core().add_extension(path))
//
// Each eca_deploy.ECA node becomes, by the environment variable ECA_DEPLOY_OPENVINO_LOWERING at read_model time:
//   "opset" (default) OpenVINO's own ops (AvgPool or ReduceMean, Convolution, Sigmoid/HSigmoid, Multiply, Add,
//                   Relu), which the CPU plugin runs in its blocked layouts and fuses like the unfused model's ECA
//                   blocks: one pooling pass and one fused eltwise pass, ECA's memory floor on OpenVINO;
//   "op"            the extension's EcaOp: one fused CPU kernel, run by the CPU plugin as a reference node (in plain
//                   NCHW layout, so the plugin reorders its blocked tensors around it: slower in whole networks).
// Circular padding with a dynamic channel count has no opset form and always becomes the op.
#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/frontend/exception.hpp>
#include <openvino/frontend/onnx/extension/conversion.hpp>
#include <openvino/op/add.hpp>
#include <openvino/op/avg_pool.hpp>
#include <openvino/op/constant.hpp>
#include <openvino/op/convert_like.hpp>
#include <openvino/op/convolution.hpp>
#include <openvino/op/gather.hpp>
#include <openvino/op/hsigmoid.hpp>
#include <openvino/op/multiply.hpp>
#include <openvino/op/reduce_mean.hpp>
#include <openvino/op/relu.hpp>
#include <openvino/op/reshape.hpp>
#include <openvino/op/sigmoid.hpp>

#include <cstdlib>

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

// The largest channel count whose channel convolution is lowered to a dense banded 1x1 convolution (C*C weights:
// 1 MiB at 512).
constexpr long kBandedMaxChannels = 512;

// The ECA block in OpenVINO's standard ops; empty when they cannot express it (circular padding, dynamic C).
ov::OutputVector lower_to_opset(ov::OutputVector const& args, std::vector<float> const& weights, float bias,
    std::string const& padding, std::string const& gate, std::string const& activation)
{
    using namespace ov::op;
    using ov::element::i64;
    ov::Output<ov::Node> const x = args[0];
    long const k = static_cast<long>(weights.size());
    long const half = (k - 1) / 2;
    auto const channels = x.get_partial_shape().rank().is_static() && x.get_partial_shape().size() == 4
        ? x.get_partial_shape()[1]
        : ov::Dimension::dynamic();
    if (padding == "circular" && channels.is_dynamic())
    {
        return {};
    }
    auto constant_like = [&](ov::Shape const& dims, std::vector<float> const& values) {
        ov::Output<ov::Node> c = v0::Constant::create(ov::element::f32, dims, values);
        return x.get_element_type() == ov::element::f32 ? c : std::make_shared<v1::ConvertLike>(c, x)->output(0);
    };
    auto apply_gate = [&](ov::Output<ov::Node> const& logit) -> ov::Output<ov::Node> {
        if (gate == "hard_sigmoid")
        {
            return std::make_shared<v5::HSigmoid>(logit);
        }
        return std::make_shared<v0::Sigmoid>(logit);
    };
    auto finish = [&](ov::Output<ov::Node> const& g) -> ov::OutputVector {
        ov::Output<ov::Node> y = std::make_shared<v1::Multiply>(x, g);
        if (args.size() == 2)
        {
            y = std::make_shared<v1::Add>(y, args[1]);
        }
        if (activation == "relu")
        {
            y = std::make_shared<v0::Relu>(y);
        }
        return {y};
    };
    auto const mean_axes = v0::Constant::create(i64, {2}, {2, 3});
    // One tap (any padding): the gate is an elementwise map of the pooled means, sigmoid(w * mean + b). After a
    // ReduceMean the CPU plugin fuses that map into the reduction, so the layer is two nodes: the pool with its
    // gate, and the scaling pass (measured: ECA-MobileNetV2, whose first ten ECA layers have k = 1). After an
    // AvgPool it fused the map into the scaling pass instead and computed the sigmoid once per element of X.
    if (k == 1)
    {
        ov::Output<ov::Node> s = std::make_shared<v1::ReduceMean>(x, mean_axes, true); // [N,C,1,1]
        s = std::make_shared<v1::Multiply>(s, constant_like({}, weights));
        if (bias != 0.0f)
        {
            s = std::make_shared<v1::Add>(s, constant_like({}, {bias}));
        }
        return finish(apply_gate(s));
    }
    // More taps: the mean over H*W as a global average pool where H and W are known: OpenVINO's CPU pooling kernel
    // reads blocked tensors faster than its ReduceMean does (measured on the outputs of 1x1 convolutions).
    auto const& shape = x.get_partial_shape();
    ov::Output<ov::Node> mean;
    if (shape.rank().is_static() && shape.size() == 4 && shape[2].is_static() && shape[3].is_static())
    {
        ov::Shape const window{static_cast<size_t>(shape[2].get_length()), static_cast<size_t>(shape[3].get_length())};
        mean = std::make_shared<v1::AvgPool>(x, ov::Strides{1, 1}, ov::Shape{0, 0}, ov::Shape{0, 0}, window, true);
    }
    else
    {
        mean = std::make_shared<v1::ReduceMean>(x, mean_axes, true); // [N,C,1,1]
    }
    // Up to kBandedMaxChannels channels, the channel convolution is a 1x1 convolution of the pooled [N,C,1,1] means
    // with its band as a dense [C,C,1,1] weight (zeros outside the band; circular padding wraps the band around):
    // the CPU plugin keeps it in the network's layout and fuses the gate into it, where the row form below costs a
    // reshape and a reorder on either side (measured: ECA-MobileNetV2, 17 layers of at most 320 channels).
    if (channels.is_static() && channels.get_length() <= kBandedMaxChannels)
    {
        size_t const c = static_cast<size_t>(channels.get_length());
        std::vector<float> band(c * c, 0.0f);
        for (long o = 0; o < static_cast<long>(c); ++o)
        {
            for (long j = 0; j < k; ++j)
            {
                long i = o + j - half;
                if (padding == "circular")
                {
                    i = ((i % static_cast<long>(c)) + static_cast<long>(c)) % static_cast<long>(c);
                }
                if (i >= 0 && i < static_cast<long>(c))
                {
                    band[static_cast<size_t>(o) * c + static_cast<size_t>(i)] += weights[static_cast<size_t>(j)];
                }
            }
        }
        ov::Output<ov::Node> s = std::make_shared<v1::Convolution>(mean, constant_like({c, c, 1, 1}, band),
            ov::Strides{1, 1}, ov::CoordinateDiff{0, 0}, ov::CoordinateDiff{0, 0}, ov::Strides{1, 1});
        if (bias != 0.0f)
        {
            s = std::make_shared<v1::Add>(s, constant_like({}, {bias}));
        }
        return finish(apply_gate(s));
    }
    // Above kBandedMaxChannels: the 1-D convolution over the channel row.
    ov::Output<ov::Node> row
        = std::make_shared<v1::Reshape>(mean, v0::Constant::create(i64, {3}, {0, 1, -1}), true); // [N,1,C]
    long pad = half;
    if (padding == "circular")
    {
        long const c = channels.get_length();
        std::vector<int64_t> index(static_cast<size_t>(c + 2 * half));
        for (long i = 0; i < c + 2 * half; ++i)
        {
            index[static_cast<size_t>(i)] = (((i - half) % c) + c) % c;
        }
        row = std::make_shared<v8::Gather>(row, v0::Constant::create(i64, {index.size()}, index),
            v0::Constant::create(i64, {}, {2}));
        pad = 0;
    }
    ov::Output<ov::Node> w = constant_like({1, 1, static_cast<size_t>(k)}, weights);
    ov::Output<ov::Node> s = std::make_shared<v1::Convolution>(row, w, ov::Strides{1},
        ov::CoordinateDiff{static_cast<std::ptrdiff_t>(pad)}, ov::CoordinateDiff{static_cast<std::ptrdiff_t>(pad)},
        ov::Strides{1});
    if (bias != 0.0f)
    {
        s = std::make_shared<v1::Add>(s, constant_like({}, {bias}));
    }
    ov::Output<ov::Node> g = apply_gate(s);
    g = std::make_shared<v1::Reshape>(g, v0::Constant::create(i64, {4}, {0, -1, 1, 1}), true); // [N,C,1,1]
    return finish(g);
}

bool lower_to_opset_requested()
{
    char const* value = std::getenv("ECA_DEPLOY_OPENVINO_LOWERING");
    std::string const mode = value != nullptr ? value : "opset";
    FRONT_END_GENERAL_CHECK(mode == "op" || mode == "opset" || mode.empty(),
        "ECA_DEPLOY_OPENVINO_LOWERING must be \"op\" or \"opset\", got \"", mode, "\"");
    return mode != "op";
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
    // Validated by the op either way (taps, attribute strings, shapes): a bad node fails the same in both modes.
    auto op = std::make_shared<eca_deploy::EcaOp>(args, weights, bias, padding, gate, activation);
    if (lower_to_opset_requested())
    {
        ov::OutputVector lowered = lower_to_opset(args, weights, bias, padding, gate, activation);
        if (!lowered.empty())
        {
            return lowered;
        }
    }
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
