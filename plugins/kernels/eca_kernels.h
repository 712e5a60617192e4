/*
 * ECA (Efficient Channel Attention) CUDA kernels behind a small C ABI.
 *
 *   Y[n,c,h,w] = act(X[n,c,h,w] * gate(sum_j weights[j] * m[n, c + j - (k-1)/2] + bias) + R[n,c,h,w])
 *
 * with m = mean_hw(X) (cross-correlation like PyTorch's Conv1d). X, Y and the optional residual R are dense NCHW
 * float32 or float16 tensors in device memory. Padding: channels outside [0, C) count as 0 (zeros) or as channel
 * (i mod C) (circular); gate: sigmoid or hard_sigmoid = clamp(s/6 + 1/2, 0, 1); act: none or relu, applied last.
 * eca_forward is the op with bias 0, zeros, sigmoid, no residual, none. Means, sums, the gate and Y are computed in
 * float32 (Y rounded to the I/O type once).
 * No TensorRT header is involved: the library can be loaded with ctypes and used by any CUDA program.
 */
#ifndef ECA_KERNELS_H
#define ECA_KERNELS_H

#if defined(__CUDACC_RTC__) /* NVRTC (device code only): size_t is built in, no C library headers */
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#define ECA_API
#else
#include <stddef.h>
#include <stdint.h>
#endif

#ifndef ECA_API
#define ECA_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define ECA_KERNELS_VERSION_MAJOR 1
#define ECA_KERNELS_VERSION_MINOR 2
#define ECA_KERNELS_VERSION_PATCH 0

/* Largest supported kernel size k (odd, 1 <= k <= ECA_MAX_K). */
#define ECA_MAX_K 63

typedef enum { ECA_DTYPE_FLOAT32 = 0, ECA_DTYPE_FLOAT16 = 1 } eca_dtype_t;

/* AUTO picks FUSED or TWO_PASS by shape and device (see eca_select_path); the others force a path. */
typedef enum { ECA_PATH_AUTO = 0, ECA_PATH_FUSED = 1, ECA_PATH_TWO_PASS = 2 } eca_path_t;

/* The op's string attributes as codes: the index in eca_deploy.ops' ECA_PADDINGS, ECA_GATES, ECA_ACTIVATIONS. */
typedef enum { ECA_PADDING_ZEROS = 0, ECA_PADDING_CIRCULAR = 1 } eca_padding_t;
typedef enum { ECA_GATE_SIGMOID = 0, ECA_GATE_HARD_SIGMOID = 1 } eca_gate_t;
typedef enum { ECA_ACTIVATION_NONE = 0, ECA_ACTIVATION_RELU = 1 } eca_activation_t;

/* The op's attributes. */
typedef struct {
    const float* weights; /* k host floats, copied into the launch */
    int32_t k;            /* odd, 1 to ECA_MAX_K */
    float bias;
    int32_t padding;    /* eca_padding_t */
    int32_t gate;       /* eca_gate_t */
    int32_t activation; /* eca_activation_t */
} eca_op_t;

typedef enum {
    ECA_STATUS_OK = 0,
    ECA_STATUS_INVALID_ARGUMENT = 1, /* bad pointer, shape, k, dtype or path */
    ECA_STATUS_NOT_SUPPORTED = 2,    /* forced FUSED path that does not fit this shape on this device */
    ECA_STATUS_CUDA_ERROR = 3        /* a CUDA runtime call or kernel launch failed */
} eca_status_t;

/* Library version as 10000 * major + 100 * minor + patch. */
ECA_API int32_t eca_kernels_version(void);

/* "eca_kernels=1.0.0 cuda=13.0 archs=75,80,... max_k=63": how this library was built. */
ECA_API const char* eca_kernels_build_info(void);

/* Message of the last failed call on this thread ("" if none). */
ECA_API const char* eca_last_error(void);

/* Device workspace bytes for this shape and path: 0 for FUSED; for TWO_PASS and AUTO the two-pass size, an upper
 * bound for every path, op and smaller shape (use it to size one buffer for a range). AUTO cannot be smaller here:
 * this query does not know whether the call has a residual or runs in place, and either may make AUTO two-pass. */
ECA_API size_t eca_workspace_size(int64_t n, int64_t c, int64_t h, int64_t w, int32_t k, eca_dtype_t dtype,
                                  eca_path_t path);

/* Exactly the workspace bytes eca_forward_op needs for this op, residual (0/1), in-place call (x == y: 0/1), shape
 * and path on the current device: the same decision as the call's (eca_launch_plan). 0 when the arguments are
 * invalid (the call fails too) or nothing runs two-pass. */
ECA_API size_t eca_workspace_size_op(int64_t n, int64_t c, int64_t h, int64_t w, const eca_op_t* op,
                                     int32_t has_residual, int32_t in_place, eca_dtype_t dtype, eca_path_t path);

/* The launches eca_forward_op makes for a call with 16-byte aligned tensors (narrower accesses otherwise). */
typedef struct {
    int32_t path;           /* ECA_PATH_FUSED or ECA_PATH_TWO_PASS */
    int32_t launches;       /* kernel launches: 1 (fused), 2 (two-pass: pool, then scale, on the same grid), 0 */
    int64_t blocks;         /* blocks per launch */
    int32_t threads;        /* threads per block */
    int32_t active_threads; /* threads of the first block that have elements to load */
    int32_t pack_elements;  /* elements per memory access */
    size_t shared_bytes;    /* dynamic shared memory per block */
    size_t workspace_bytes; /* device workspace the call needs */
} eca_launch_t;

/* Fill `out` with the path and geometry eca_forward_op chooses (the one decision both use); an eca_status_t. */
ECA_API int32_t eca_launch_plan(int64_t n, int64_t c, int64_t h, int64_t w, const eca_op_t* op, int32_t has_residual,
                                int32_t in_place, eca_dtype_t dtype, eca_path_t path, eca_launch_t* out);

/* The path ECA_PATH_AUTO takes for this shape on the current device (ECA_PATH_FUSED or ECA_PATH_TWO_PASS),
 * or -1 with eca_last_error() set when the arguments are invalid or the device cannot be queried. */
ECA_API int32_t eca_select_path(int64_t n, int64_t c, int64_t h, int64_t w, int32_t k, eca_dtype_t dtype);

/* The path ECA_PATH_AUTO takes for this op (with a residual input or not) and shape on the current device. */
ECA_API int32_t eca_select_path_op(int64_t n, int64_t c, int64_t h, int64_t w, const eca_op_t* op, int32_t has_residual,
                                   eca_dtype_t dtype);

/* Run ECA on `stream` (a cudaStream_t; NULL is the default stream), asynchronously.
 * weights: k host floats, copied into the launch; workspace: eca_workspace_size(..., path) device bytes (or
 * eca_workspace_size_op's exact value).
 * x and y must not partially overlap; x == y (in place) runs the two-pass path.
 * Returns an eca_status_t; on failure eca_last_error() says why. */
ECA_API int32_t eca_forward(const void* x, void* y, const float* weights, int32_t k, int64_t n, int64_t c,
                            int64_t h, int64_t w, eca_dtype_t dtype, eca_path_t path, void* workspace,
                            void* stream);

/* The full op: like eca_forward, with the attributes in `op` and an optional residual (NULL: none) of X's shape and
 * type, which may be Y but must not partially overlap it. */
ECA_API int32_t eca_forward_op(const void* x, const void* residual, void* y, const eca_op_t* op, int64_t n, int64_t c,
                               int64_t h, int64_t w, eca_dtype_t dtype, eca_path_t path, void* workspace,
                               void* stream);

#ifdef __cplusplus
}
#endif

#endif /* ECA_KERNELS_H */
