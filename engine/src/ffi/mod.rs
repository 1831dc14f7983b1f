//! Kernel parameter structs shared with `kernels-cuda/include/params.h`.

#[allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, clippy::all)]
pub mod params;
