// DIFFRT_HD marks functions written once for host and device code (nvcc sees __host__ __device__,
// the C++ compiler nothing): sampler/philox.h, kernels/moe_spec.h.
#pragma once

#ifdef __CUDACC__
#define DIFFRT_HD __host__ __device__
#else
#define DIFFRT_HD
#endif
