// Entry points of libeca_trt_plugin.so, the ways TensorRT finds the ECA creator:
//  - loaded by a TensorRT loader (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, plans that carry the
//    library): the loader calls setLoggerFinder() and getCreators() and registers the creator itself;
//  - loaded by plain dlopen (ctypes, trtexec --staticPlugins, LD_PRELOAD) into a process that already runs TensorRT:
//    the creator registers itself when the library loads, as REGISTER_TENSORRT_PLUGIN would.
// The library does not link TensorRT (headers only): it loads without it, and a version-compatible plan can carry it.

#include "eca_plugin.h"

#include "eca_kernels.h"

#include <NvInferVersion.h>

#include <dlfcn.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <string>

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
std::atomic<IPluginRegistry*> gRegisteredIn{nullptr}; // registry of the load-time registration, until handed over

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

// Load-time registration under the plugin's namespace (REGISTER_TENSORRT_PLUGIN would pass ""), remembered so that
// getCreators() can hand it over to a loader.
struct LoadTimeRegistration
{
    LoadTimeRegistration()
    {
        IPluginRegistry* registry = loadedRuntimeRegistry();
        if (registry != nullptr && registry->registerCreator(gCreator, kPluginNamespace))
            gRegisteredIn = registry;
    }
} const gLoadTimeRegistration;

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

ECA_PLUGIN_API void setLoggerFinder(ILoggerFinder* finder)
{
    eca_deploy::gLoggerFinder = finder;
}

ECA_PLUGIN_API IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    // A loader registers the creators it gets here and fails if one is already registered: withdraw the load-time
    // registration (the loader's dlopen ran it just before) and let the loader own the creator.
    if (IPluginRegistry* registry = eca_deploy::gRegisteredIn.exchange(nullptr))
        registry->deregisterCreator(eca_deploy::gCreator);
    static IPluginCreatorInterface* const creators[] = {&eca_deploy::gCreator};
    nbCreators = 1;
    return creators;
}

// "eca_trt_plugin=1.0.0 tensorrt=10.3.0 plugin=eca_deploy::ECA/1 eca_kernels=1.0.0 cuda=... archs=... max_k=63"
ECA_PLUGIN_API char const* eca_plugin_build_info()
{
    static std::string const info = std::string("eca_trt_plugin=") + ECA_STR(ECA_KERNELS_VERSION_MAJOR) "."
        ECA_STR(ECA_KERNELS_VERSION_MINOR) "." ECA_STR(ECA_KERNELS_VERSION_PATCH) " tensorrt=" ECA_STR(
            NV_TENSORRT_MAJOR) "." ECA_STR(NV_TENSORRT_MINOR) "." ECA_STR(NV_TENSORRT_PATCH) " plugin="
        + eca_deploy::kPluginNamespace + "::" + eca_deploy::kPluginName + "/" + eca_deploy::kPluginVersion + " "
        + eca_kernels_build_info();
    return info.c_str();
}
