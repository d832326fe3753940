/* backend_cuda.h - the CUDA backend: fp16 (bf16, fp32 selectable) on one device.
 *
 * Fills the same op table as the CPU backend (engine/backend.h); tensors
 * hold device pointers, host_memory is 0. One stream, one cuBLASLt and one
 * cuDNN handle per backend; every device buffer the ops need is allocated
 * here at creation, never inside a forward. */
#ifndef KG_BACKEND_CUDA_H
#define KG_BACKEND_CUDA_H

#ifdef __cplusplus
extern "C" {
#endif

/* the engine headers are plain C without linkage guards */
#include "backend.h"

/* Creates a backend on device_id computing in dtype (KG_F16, KG_BF16 or
 * KG_F32). Fails with KG_ERR_NO_DEVICE and the runtime's reason when no
 * usable device or driver is present, KG_ERR_INVALID_ARG for a bad dtype,
 * KG_ERR_DEVICE/KG_ERR_NOMEM when a library or allocation fails. */
kg_status kg_backend_cuda_new(kg_backend **out, int device_id, kg_dtype dtype, kg_error *err);

/* Number of usable CUDA devices; 0 when there is no device or driver. */
int kg_cuda_device_count(void);

#ifdef __cplusplus
}
#endif

#endif
