// The ECA op for OpenVINO (type "ECA", opset "eca_deploy"): a custom ov::op::Op whose evaluate() runs the CPU
// kernel of eca_cpu_kernel.h; OpenVINO's CPU plugin executes it as a reference node, and the kernel's tasks are
// spread with ov::parallel_for over the threads of the inference request's task arena.
#pragma once

#include <openvino/op/op.hpp>

#include <string>
#include <vector>

#include "eca_cpu_kernel.h"

namespace eca_deploy
{

class EcaOp : public ov::op::Op
{
public:
    OPENVINO_OP("ECA", "eca_deploy");

    EcaOp() = default;
    // args: X, or X and residual (same shape and type).
    EcaOp(ov::OutputVector const& args, std::vector<float> weights, float bias = 0.0f, std::string padding = "zeros",
        std::string gate = "sigmoid", std::string activation = "none");

    void validate_and_infer_types() override;
    std::shared_ptr<ov::Node> clone_with_new_inputs(ov::OutputVector const& new_args) const override;
    bool visit_attributes(ov::AttributeVisitor& visitor) override;
    bool evaluate(ov::TensorVector& outputs, ov::TensorVector const& inputs) const override;
    bool has_evaluate() const override;

    cpu::EcaParams params() const;

private:
    std::vector<float> m_weights;
    float m_bias = 0.0f;
    std::string m_padding = "zeros";
    std::string m_gate = "sigmoid";
    std::string m_activation = "none";
};

} // namespace eca_deploy
