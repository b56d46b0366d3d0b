// Counts calls of the global operator new in this process (replaced in alloc_counter.cpp), so a
// test can assert that a denoising step allocates nothing.
#pragma once
#include <cstdint>

namespace diffrt {
uint64_t alloc_count();
}
