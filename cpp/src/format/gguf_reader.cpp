#include "diffrt/gguf.h"
