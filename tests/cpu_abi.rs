//! Runs everywhere (no GPU): checks the committed PTX against the Rust side of every kernel.
//! For each entry of `rooflab::kernels::ENTRIES`, in both PTX sets (ptx/sm_90a, ptx/sm_80): the
//! `.entry` exists in its module, its parameter count matches, and each by-value struct parameter
//! (`.param .align A .b8 NAME[SIZE]`) has the size and alignment of the bindgen struct. A struct
//! that drifted between params.h and params.rs, a renamed kernel or stale PTX fails here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rooflab::kernels::{ParamAbi, ENTRIES};

const ARCHES: [&str; 2] = ["sm_90a", "sm_80"];

fn ptx_path(arch: &str, module: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("ptx").join(arch).join(format!("{module}.ptx"))
}

/// Entry name -> its parameters, for every `.entry` of a PTX file.
fn parse_entries(ptx: &str) -> BTreeMap<String, Vec<ParamAbi>> {
    let mut entries = BTreeMap::new();
    let mut rest = ptx;
    while let Some(at) = rest.find(".entry ") {
        let after = &rest[at + ".entry ".len()..];
        let open = after.find('(').expect("`.entry NAME(`");
        let name = after[..open].trim().to_string();
        let close = after.find(')').expect("parameter list closes");
        let params = after[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| parse_param(p).unwrap_or_else(|| panic!("entry {name}: cannot parse parameter `{p}`")))
            .collect();
        entries.insert(name, params);
        rest = &after[close..];
    }
    entries
}

/// `.param .align 8 .b8 NAME[40]` -> 40 bytes aligned to 8; `.param .u64 NAME` -> 8/8.
fn parse_param(p: &str) -> Option<ParamAbi> {
    let words: Vec<&str> = p.split_whitespace().collect();
    match words.as_slice() {
        [".param", ".align", align, ".b8", name] => {
            let size = name.split('[').nth(1)?.trim_end_matches(']').parse().ok()?;
            Some(ParamAbi { size, align: align.parse().ok()? })
        }
        [".param", ty, _name] => {
            let bits: usize = ty.trim_start_matches(|c: char| !c.is_ascii_digit()).parse().ok()?;
            Some(ParamAbi { size: bits / 8, align: bits / 8 })
        }
        _ => None,
    }
}

#[test]
fn every_rust_kernel_entry_matches_the_committed_ptx() {
    let mut problems = Vec::new();
    for arch in ARCHES {
        let mut modules: BTreeMap<&str, BTreeMap<String, Vec<ParamAbi>>> = BTreeMap::new();
        for e in ENTRIES {
            let entries = modules.entry(e.module).or_insert_with(|| {
                let path = ptx_path(arch, e.module);
                parse_entries(&std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display())))
            });
            match entries.get(e.entry) {
                None => problems.push(format!("{arch}/{}.ptx has no entry `{}`", e.module, e.entry)),
                Some(found) if found.as_slice() != e.params => problems.push(format!(
                    "{arch}/{}.ptx `{}`: PTX parameters {found:?}, Rust {:?}",
                    e.module, e.entry, e.params
                )),
                Some(_) => {}
            }
        }
        // The other way round: a kernel in these modules that Rust does not know is dead or unlisted.
        for (module, entries) in &modules {
            for name in entries.keys() {
                if !ENTRIES.iter().any(|e| e.module == *module && e.entry == name) {
                    problems
                        .push(format!("{arch}/{module}.ptx has entry `{name}` that kernels::ENTRIES does not list"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "PTX/Rust ABI mismatches:\n{}", problems.join("\n"));
}

#[test]
fn the_parser_reads_struct_and_scalar_parameters() {
    let ptx = ".visible .entry k(\n\t.param .align 8 .b8 k_param_0[40],\n\t.param .u32 k_param_1\n)\n{\n}\n\
               .visible .entry empty(\n)\n{\n}\n";
    let entries = parse_entries(ptx);
    assert_eq!(entries["k"], vec![ParamAbi { size: 40, align: 8 }, ParamAbi { size: 4, align: 4 }]);
    assert!(entries["empty"].is_empty());
}
