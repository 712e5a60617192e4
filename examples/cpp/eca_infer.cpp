// Minimal C++ inference with an ECA-Net TensorRT engine: load the ECA plugin library, deserialize the engine, classify
// one image and print the top-5 classes.
//
//   eca_infer ENGINE IMAGE [--plugin libeca_trt_plugin_vc.so] [--labels labels.txt] [--trust-host-code]
//
// IMAGE is a binary PPM (P6) already at the engine's input size, normalized here with the ImageNet mean and std, or
// a raw little-endian float32 file holding the normalized [1,3,H,W] input (e.g. numpy's tofile()).
// --trust-host-code allows running a version-compatible engine, whose plan carries code that runs on the host.

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

class Logger : public ILogger
{
public:
    void log(Severity severity, char const* message) noexcept override
    {
        if (severity <= Severity::kWARNING)
            std::fprintf(stderr, "[TensorRT] %s\n", message);
    }
};

void check(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
        throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

std::vector<char> readFile(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
        throw std::runtime_error("cannot open " + path);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

// A P6 PPM of exactly height x width pixels as a normalized CHW float32 image.
std::vector<float> readPpm(std::string const& path, int64_t height, int64_t width)
{
    std::ifstream file(path, std::ios::binary);
    std::string magic;
    int64_t w = 0, h = 0, maxValue = 0;
    file >> magic >> w >> h >> maxValue;
    file.get(); // the single whitespace before the pixels
    if (!file || magic != "P6" || maxValue != 255)
        throw std::runtime_error(path + ": not a binary 8-bit PPM (P6)");
    if (w != width || h != height)
        throw std::runtime_error(path + " is " + std::to_string(w) + "x" + std::to_string(h) + ", the engine takes "
            + std::to_string(width) + "x" + std::to_string(height));
    std::vector<unsigned char> rgb(size_t(w * h * 3));
    if (!file.read(reinterpret_cast<char*>(rgb.data()), std::streamsize(rgb.size())))
        throw std::runtime_error(path + ": truncated pixel data");
    float const mean[3] = {0.485f, 0.456f, 0.406f};
    float const stdev[3] = {0.229f, 0.224f, 0.225f};
    std::vector<float> chw(rgb.size());
    for (int64_t c = 0; c < 3; ++c)
        for (int64_t i = 0; i < h * w; ++i)
            chw[size_t(c * h * w + i)] = (rgb[size_t(i * 3 + c)] / 255.f - mean[c]) / stdev[c];
    return chw;
}

std::vector<float> readInput(std::string const& path, Dims const& shape)
{
    int64_t const height = shape.d[2], width = shape.d[3];
    if (path.size() > 4 && path.compare(path.size() - 4, 4, ".ppm") == 0)
        return readPpm(path, height, width);
    std::vector<char> bytes = readFile(path);
    if (int64_t(bytes.size()) != 3 * height * width * int64_t(sizeof(float)))
        throw std::runtime_error(path + ": expected " + std::to_string(3 * height * width) + " float32 values");
    std::vector<float> values(bytes.size() / sizeof(float));
    std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(values.data()));
    return values;
}

std::vector<std::string> readLabels(std::string const& path)
{
    std::vector<std::string> labels;
    std::ifstream file(path);
    for (std::string line; std::getline(file, line);)
        labels.push_back(line);
    return labels;
}

int run(int argc, char** argv)
{
    std::vector<std::string> positional;
    std::string pluginPath, labelsPath;
    bool trustHostCode = false;
    for (int i = 1; i < argc; ++i)
    {
        std::string const arg = argv[i];
        if (arg == "--plugin" && i + 1 < argc)
            pluginPath = argv[++i];
        else if (arg == "--labels" && i + 1 < argc)
            labelsPath = argv[++i];
        else if (arg == "--trust-host-code")
            trustHostCode = true;
        else
            positional.push_back(arg);
    }
    if (positional.size() != 2)
    {
        std::fprintf(stderr, "usage: %s ENGINE IMAGE [--plugin LIB] [--labels FILE] [--trust-host-code]\n", argv[0]);
        return 2;
    }

    Logger logger;
    std::unique_ptr<IRuntime> runtime{createInferRuntime(logger)};
    if (!runtime)
        throw std::runtime_error("cannot create the TensorRT runtime");
    runtime->setEngineHostCodeAllowed(trustHostCode);
    // Registers the ECA creator (getCreators); engines whose plan carries the library need no --plugin.
    if (!pluginPath.empty() && runtime->getPluginRegistry().loadLibrary(pluginPath.c_str()) == nullptr)
        throw std::runtime_error("cannot load the plugin library " + pluginPath);

    std::vector<char> plan = readFile(positional[0]);
    std::unique_ptr<ICudaEngine> engine{runtime->deserializeCudaEngine(plan.data(), plan.size())};
    if (!engine)
        throw std::runtime_error("cannot deserialize " + positional[0] + " (see the TensorRT messages above)");
    std::unique_ptr<IExecutionContext> context{engine->createExecutionContext()};
    if (!context || engine->getNbIOTensors() != 2)
        throw std::runtime_error("expected an engine with one input and one output");
    char const* inputName = engine->getIOTensorName(0);
    char const* outputName = engine->getIOTensorName(1);
    if (engine->getTensorIOMode(inputName) != TensorIOMode::kINPUT)
        std::swap(inputName, outputName);
    if (engine->getTensorDataType(inputName) != DataType::kFLOAT || engine->getTensorDataType(outputName) != DataType::kFLOAT)
        throw std::runtime_error("expected float32 input and output tensors");

    Dims inputShape = engine->getTensorShape(inputName);
    if (inputShape.nbDims != 4 || inputShape.d[2] < 1 || inputShape.d[3] < 1)
        throw std::runtime_error("expected an input [N,3,H,W] with fixed H and W");
    inputShape.d[0] = 1; // one image (a dynamic batch dimension is -1)
    if (!context->setInputShape(inputName, inputShape))
        throw std::runtime_error("the engine does not accept batch 1");
    std::vector<float> input = readInput(positional[1], inputShape);
    Dims const outputShape = context->getTensorShape(outputName);
    int64_t const classes = outputShape.nbDims > 0 ? outputShape.d[outputShape.nbDims - 1] : 0;
    if (classes < 1)
        throw std::runtime_error("expected an output [N, classes]");
    std::vector<float> logits(static_cast<size_t>(classes));

    void* deviceInput = nullptr;
    void* deviceOutput = nullptr;
    cudaStream_t stream = nullptr;
    check(cudaMalloc(&deviceInput, input.size() * sizeof(float)), "cudaMalloc");
    check(cudaMalloc(&deviceOutput, logits.size() * sizeof(float)), "cudaMalloc");
    check(cudaStreamCreate(&stream), "cudaStreamCreate");
    check(cudaMemcpyAsync(deviceInput, input.data(), input.size() * sizeof(float), cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync");
    context->setTensorAddress(inputName, deviceInput);
    context->setTensorAddress(outputName, deviceOutput);
    if (!context->enqueueV3(stream))
        throw std::runtime_error("inference failed (see the TensorRT messages above)");
    check(cudaMemcpyAsync(logits.data(), deviceOutput, logits.size() * sizeof(float), cudaMemcpyDeviceToHost, stream),
        "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    cudaFree(deviceInput);
    cudaFree(deviceOutput);
    cudaStreamDestroy(stream);

    // Softmax, then the five most probable classes.
    float const top = *std::max_element(logits.begin(), logits.end());
    std::vector<double> probs(logits.size());
    std::transform(logits.begin(), logits.end(), probs.begin(), [top](float v) { return std::exp(double(v - top)); });
    double const total = std::accumulate(probs.begin(), probs.end(), 0.0);
    std::vector<int64_t> order(probs.size());
    std::iota(order.begin(), order.end(), 0);
    size_t const k = std::min<size_t>(5, order.size());
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) { return probs[a] > probs[b]; });
    std::vector<std::string> const labels = labelsPath.empty() ? std::vector<std::string>{} : readLabels(labelsPath);
    for (size_t i = 0; i < k; ++i)
    {
        int64_t const c = order[i];
        std::printf("%zu. class %lld  p=%.4f  %s\n", i + 1, (long long) c, probs[c] / total,
            size_t(c) < labels.size() ? labels[c].c_str() : "");
    }
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        return run(argc, argv);
    }
    catch (std::exception const& e)
    {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
