// EcaOp: shape inference, attributes and evaluate() over the CPU kernel (see eca_op.h).
#include "eca_op.h"

#include <openvino/core/parallel.hpp>
#include <openvino/core/type/float16.hpp>

#include <algorithm>
#include <cstring>

namespace eca_deploy
{

using cpu::code_of;
using cpu::kActivations;
using cpu::kGates;
using cpu::kPaddings;

namespace
{

// Runs the kernel over float32 buffers: tasks (image, channel tile) spread over the arena's threads.
void run_f32(cpu::EcaParams const& p, cpu::Geometry const& g, float const* x, float const* r, float* y)
{
    size_t const threads = static_cast<size_t>(std::max(1, parallel_get_max_threads()));
    if (y == x)
    {
        // In place: a task must not read halo channels another task is overwriting, so means come first.
        std::vector<float> means(g.n * g.c);
        ov::parallel_for(g.n, [&](size_t n) { cpu::eca_means_all(g, x, n, means.data() + n * g.c); });
        ov::parallel_for(g.n, [&](size_t n) {
            cpu::eca_tile(p, g, x, r, y, n, 0, g.c, means.data() + n * g.c, /*means_ready=*/true);
        });
        return;
    }
    cpu::TaskGrid const grid(g, p.half(), threads);
    ov::parallel_for(grid.count(), [&](size_t task) { cpu::eca_task(p, grid, x, r, y, task); });
}

std::vector<float> to_f32(ov::Tensor const& t)
{
    std::vector<float> out(t.get_size());
    ov::float16 const* src = t.data<ov::float16>();
    ov::parallel_for(out.size(), [&](size_t i) { out[i] = static_cast<float>(src[i]); });
    return out;
}

} // namespace

EcaOp::EcaOp(ov::OutputVector const& args, std::vector<float> weights, float bias, std::string padding,
    std::string gate, std::string activation)
    : Op(args)
    , m_weights(std::move(weights))
    , m_bias(bias)
    , m_padding(std::move(padding))
    , m_gate(std::move(gate))
    , m_activation(std::move(activation))
{
    constructor_validate_and_infer_types();
}

cpu::EcaParams EcaOp::params() const
{
    cpu::EcaParams p;
    p.weights = m_weights;
    p.bias = m_bias;
    p.padding = static_cast<cpu::Padding>(code_of(m_padding, kPaddings));
    p.gate = static_cast<cpu::Gate>(code_of(m_gate, kGates));
    p.activation = static_cast<cpu::Activation>(code_of(m_activation, kActivations));
    return p;
}

void EcaOp::validate_and_infer_types()
{
    size_t const k = m_weights.size();
    NODE_VALIDATION_CHECK(this, k % 2 == 1 && k >= 1 && k <= static_cast<size_t>(cpu::kMaxTaps),
        "ECA: 'weights' must hold an odd number of taps between 1 and 63, got ", k);
    NODE_VALIDATION_CHECK(this, code_of(m_padding, kPaddings) >= 0,
        "ECA: 'padding' must be \"zeros\" or \"circular\", got \"", m_padding, "\"");
    NODE_VALIDATION_CHECK(this, code_of(m_gate, kGates) >= 0,
        "ECA: 'gate' must be \"sigmoid\" or \"hard_sigmoid\", got \"", m_gate, "\"");
    NODE_VALIDATION_CHECK(this, code_of(m_activation, kActivations) >= 0,
        "ECA: 'activation' must be \"none\" or \"relu\", got \"", m_activation, "\"");
    size_t const inputs = get_input_size();
    NODE_VALIDATION_CHECK(this, inputs == 1 || inputs == 2, "ECA takes X and an optional residual, got ", inputs,
        " inputs");
    auto const type = get_input_element_type(0);
    NODE_VALIDATION_CHECK(this, type.is_dynamic() || type == ov::element::f32 || type == ov::element::f16,
        "ECA: X must be float32 or float16, got ", type);
    auto const& shape = get_input_partial_shape(0);
    NODE_VALIDATION_CHECK(this, shape.rank().compatible(4), "ECA: X must be [N,C,H,W], got ", shape);
    auto out_shape = shape;
    if (inputs == 2)
    {
        NODE_VALIDATION_CHECK(this, get_input_element_type(1).compatible(type),
            "ECA: the residual must have X's type ", type, ", got ", get_input_element_type(1));
        NODE_VALIDATION_CHECK(this, ov::PartialShape::merge_into(out_shape, get_input_partial_shape(1)),
            "ECA: the residual must have X's shape ", shape, ", got ", get_input_partial_shape(1));
    }
    set_output_type(0, type, out_shape);
}

std::shared_ptr<ov::Node> EcaOp::clone_with_new_inputs(ov::OutputVector const& new_args) const
{
    return std::make_shared<EcaOp>(new_args, m_weights, m_bias, m_padding, m_gate, m_activation);
}

bool EcaOp::visit_attributes(ov::AttributeVisitor& visitor)
{
    visitor.on_attribute("weights", m_weights);
    visitor.on_attribute("bias", m_bias);
    visitor.on_attribute("padding", m_padding);
    visitor.on_attribute("gate", m_gate);
    visitor.on_attribute("activation", m_activation);
    return true;
}

bool EcaOp::has_evaluate() const
{
    auto const type = get_input_element_type(0);
    return type == ov::element::f32 || type == ov::element::f16;
}

bool EcaOp::evaluate(ov::TensorVector& outputs, ov::TensorVector const& inputs) const
{
    ov::Tensor const& x = inputs[0];
    ov::Shape const shape = x.get_shape();
    if (shape.size() != 4)
    {
        return false;
    }
    bool const has_residual = inputs.size() == 2;
    if (has_residual && inputs[1].get_shape() != shape)
    {
        return false;
    }
    outputs[0].set_shape(shape);
    cpu::Geometry const g{shape[0], shape[1], shape[2] * shape[3]};
    cpu::EcaParams const p = params();
    auto const type = x.get_element_type();
    if (type == ov::element::f32)
    {
        float const* r = has_residual ? inputs[1].data<float const>() : nullptr;
        run_f32(p, g, x.data<float const>(), r, outputs[0].data<float>());
        return true;
    }
    if (type == ov::element::f16)
    {
        // Contract numerics: float32 inside, rounded to float16 at the end.
        std::vector<float> xf = to_f32(x);
        std::vector<float> rf = has_residual ? to_f32(inputs[1]) : std::vector<float>();
        std::vector<float> yf(xf.size());
        run_f32(p, g, xf.data(), has_residual ? rf.data() : nullptr, yf.data());
        ov::float16* y = outputs[0].data<ov::float16>();
        ov::parallel_for(yf.size(), [&](size_t i) { y[i] = ov::float16(yf[i]); });
        return true;
    }
    return false;
}

} // namespace eca_deploy
