// Entry points of the two plugin libraries, built from this file: each offers TensorRT exactly one way to find the
// ECA creator, as NVIDIA's libnvinfer_plugin (registration at load) and libnvinfer_vc_plugin (getCreators) do.
//  - libeca_trt_plugin.so (ECA_PLUGIN_LOADER_ENTRY_POINTS undefined): registers the creator when it is loaded by
//    plain dlopen (ctypes, trtexec --staticPlugins, LD_PRELOAD, Triton's plugin option, DeepStream's custom-lib-path)
//    into a process that already runs TensorRT, as REGISTER_TENSORRT_PLUGIN would. It exports no getCreators.
//  - libeca_trt_plugin_vc.so (ECA_PLUGIN_LOADER_ENTRY_POINTS=1): registers nothing by itself; TensorRT's loaders
//    (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, plans that carry the library) call setLoggerFinder()
//    and getCreators() and register the creator themselves.
// So no registration runs inside TensorRT's own loading (which holds the registry's lock), and no creator is
// registered twice. Neither library links TensorRT (headers only).

#include "eca_plugin.h"

#include "eca_kernels.h"

#include <NvInferVersion.h>

#include <dlfcn.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <string>

#ifndef ECA_PLUGIN_LOADER_ENTRY_POINTS
#define ECA_PLUGIN_LOADER_ENTRY_POINTS 0
#endif

#define ECA_PLUGIN_API extern "C" __attribute__((visibility("default")))
#define ECA_STR2(x) #x
#define ECA_STR(x) ECA_STR2(x)

using namespace nvinfer1;

namespace eca_deploy
{
namespace
{

std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};
EcaPluginCreator gCreator;

#if !ECA_PLUGIN_LOADER_ENTRY_POINTS
// The plugin registry of the TensorRT runtime this process already runs, if any.
IPluginRegistry* loadedRuntimeRegistry()
{
    void* runtime = dlopen("libnvinfer.so." ECA_STR(NV_TENSORRT_MAJOR), RTLD_LAZY | RTLD_NOLOAD);
    if (runtime == nullptr)
        return nullptr;
    using GetPluginRegistry = IPluginRegistry* (*) ();
    auto const getRegistry = reinterpret_cast<GetPluginRegistry>(dlsym(runtime, "getPluginRegistry"));
    IPluginRegistry* registry = getRegistry != nullptr ? getRegistry() : nullptr;
    dlclose(runtime); // only drops the reference RTLD_NOLOAD took
    return registry;
}

// Registration at load under the plugin's namespace (REGISTER_TENSORRT_PLUGIN would pass "").
struct LoadTimeRegistration
{
    LoadTimeRegistration()
    {
        if (IPluginRegistry* registry = loadedRuntimeRegistry())
            registry->registerCreator(gCreator, kPluginNamespace);
    }
} const gLoadTimeRegistration;
#endif

} // namespace

void logMessage(ILogger::Severity severity, char const* format, ...) noexcept
{
    char message[1024];
    va_list args;
    va_start(args, format);
    std::vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    ILoggerFinder* finder = gLoggerFinder.load();
    ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
    if (logger != nullptr)
        logger->log(severity, message);
    else if (severity <= ILogger::Severity::kWARNING)
        std::fprintf(stderr, "[eca_deploy] %s\n", message);
}

} // namespace eca_deploy

#if ECA_PLUGIN_LOADER_ENTRY_POINTS
ECA_PLUGIN_API void setLoggerFinder(ILoggerFinder* finder)
{
    eca_deploy::gLoggerFinder = finder;
}

ECA_PLUGIN_API IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static IPluginCreatorInterface* const creators[] = {&eca_deploy::gCreator};
    nbCreators = 1;
    return creators;
}
#define ECA_REGISTRATION "loader"
#else
#define ECA_REGISTRATION "load-time"
#endif

// "eca_trt_plugin=1.0.0 tensorrt=10.3.0 plugin=eca_deploy::ECA/1 registration=load-time eca_kernels=1.0.0 cuda=..."
ECA_PLUGIN_API char const* eca_plugin_build_info()
{
    static std::string const info = std::string("eca_trt_plugin=") + ECA_STR(ECA_KERNELS_VERSION_MAJOR) "."
        ECA_STR(ECA_KERNELS_VERSION_MINOR) "." ECA_STR(ECA_KERNELS_VERSION_PATCH) " tensorrt=" ECA_STR(
            NV_TENSORRT_MAJOR) "." ECA_STR(NV_TENSORRT_MINOR) "." ECA_STR(NV_TENSORRT_PATCH) " plugin="
        + eca_deploy::kPluginNamespace + "::" + eca_deploy::kPluginName + "/" + eca_deploy::kPluginVersion
        + " registration=" ECA_REGISTRATION " " + eca_kernels_build_info();
    return info.c_str();
}
