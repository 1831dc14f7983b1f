// The table each emulated kernel family exports: every `extern "C" __global__` entry of the .cu file,
// callable with a pointer to its by-value parameter struct (all rooflab kernels take exactly one).
#pragma once

#include <stddef.h>

#include <type_traits>

namespace rl_emu {

struct KernelEntry {
    const char* name;
    void (*call)(const void* params);
    size_t param_size;
};

template <typename F>
struct ParamOf;
template <typename P>
struct ParamOf<void (*)(P)> {
    using type = std::remove_cv_t<P>;
};

}  // namespace rl_emu

#define ROOFLAB_EMU_ENTRY(kernel)                                                                      \
    ::rl_emu::KernelEntry {                                                                            \
        #kernel,                                                                                       \
            [](const void* p) {                                                                        \
                kernel(*static_cast<const ::rl_emu::ParamOf<decltype(&kernel)>::type*>(p));            \
            },                                                                                         \
            sizeof(::rl_emu::ParamOf<decltype(&kernel)>::type)                                         \
    }

// Defines `const KernelEntry* rl_emu_entries_<family>(size_t* n)` over the listed entries.
#define ROOFLAB_EMU_FAMILY(family, ...)                                                   \
    extern "C" const ::rl_emu::KernelEntry* rl_emu_entries_##family(size_t* n) {          \
        static const ::rl_emu::KernelEntry table[] = {__VA_ARGS__};                       \
        *n = sizeof(table) / sizeof(table[0]);                                            \
        return table;                                                                     \
    }
