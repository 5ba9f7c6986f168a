#include "model/safetensors.h"
