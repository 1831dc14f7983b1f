//! Embeds the committed PTX (`ptx/<arch>/<module>.ptx`, built by scripts/build-ptx) into the engine, so the
//! binary needs no kernel files at run time and no CUDA compiler at build time.
//!
//! Writes `$OUT_DIR/embedded_ptx.rs`:
//! `pub static EMBEDDED_PTX: &[(&str, &str, &str)] = &[("sm_90a", "layers", include_str!("/abs/ptx/sm_90a/layers.ptx")), ...];`
//! (arch folder, module = file stem, PTX text), sorted by arch then module so the output is stable.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let ptx_root = manifest_dir.join("..").join("ptx");
    // A directory as rerun-if-changed makes cargo rescan it, so added or removed PTX files are picked up too.
    println!("cargo:rerun-if-changed={}", ptx_root.display());
    println!("cargo:rerun-if-changed=build.rs");

    let files = ptx_files(&ptx_root);
    let mut out = String::from("pub static EMBEDDED_PTX: &[(&str, &str, &str)] = &[\n");
    for (arch, module, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let path = path.to_str().unwrap_or_else(|| panic!("PTX path {} is not UTF-8", path.display()));
        // `{:?}` writes a valid Rust string literal (quotes and backslashes escaped).
        writeln!(out, "    ({arch:?}, {module:?}, include_str!({path:?})),").expect("writing to a String");
    }
    out.push_str("];\n");

    let out_path = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("embedded_ptx.rs");
    fs::write(&out_path, out).unwrap_or_else(|e| panic!("cannot write {}: {e}", out_path.display()));

    #[cfg(feature = "emu")]
    build_emulator(&manifest_dir.join("..").join("kernels-cuda"));
}

/// Compiles the kernel sources for the CPU emulator (kernels-cuda/emu/README.md): every family's .cu
/// through its `family_*.cpp`, with cuda_emu.h force-included, plus the emulator's runtime. Always
/// optimised: debug builds of the tests would otherwise emulate at -O0.
#[cfg(feature = "emu")]
fn build_emulator(kernels: &Path) {
    let emu = kernels.join("emu");
    // A directory here makes cargo scan everything under it: the .cu files, include/ and emu/.
    println!("cargo:rerun-if-changed={}", kernels.display());
    let mut sources: Vec<PathBuf> = fs::read_dir(&emu)
        .expect("kernels-cuda/emu exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .collect();
    sources.sort();
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .define("ROOFLAB_EMU", None)
        .include(emu.join("shim"))
        .include(&emu)
        .include(kernels.join("include"))
        .flag("-include")
        .flag("cuda_emu.h")
        .flag_if_supported("-Wno-unknown-pragmas")
        // CUDA code reads shared memory through other types (a bf16 row as uint4); nvcc allows it, and
        // GCC's strict-aliasing optimisations must not reorder around it.
        .flag("-fno-strict-aliasing")
        // The TMA kernel takes a 64-byte aligned struct by value; GCC notes that this ABI changed in GCC 4.6.
        .flag_if_supported("-Wno-psabi")
        .files(sources)
        .compile("rooflab_emu");
}

/// `(arch, module, absolute path)` of every `ptx/<arch>/<module>.ptx`, sorted. A missing `ptx/` gives none:
/// the engine then reports "no PTX for this GPU" at run time instead of failing the CPU-only build.
fn ptx_files(ptx_root: &Path) -> Vec<(String, String, PathBuf)> {
    let mut files = Vec::new();
    let Ok(arch_dirs) = fs::read_dir(ptx_root) else { return files };
    for arch_dir in arch_dirs.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()) {
        let Some(arch) = arch_dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        println!("cargo:rerun-if-changed={}", arch_dir.display());
        let Ok(entries) = fs::read_dir(&arch_dir) else { continue };
        for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            if path.extension().and_then(|x| x.to_str()) != Some("ptx") || !path.is_file() {
                continue;
            }
            let Some(module) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else { continue };
            let path = fs::canonicalize(&path).unwrap_or(path);
            files.push((arch.clone(), module, path));
        }
    }
    files.sort();
    files
}
