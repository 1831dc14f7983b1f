// Stand-in for the CUDA header of this name in emulator builds: everything is in cuda_emu.h.
#pragma once
#include "cuda_emu.h"
