//! The roofline report without a GPU: a synthetic run (numbers shaped like the DESIGN's H100 facts) is
//! written to a temporary folder, peers are merged, and the report is regenerated and checked.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use rooflab_harness::bench::{self, Case, Plan, Suite, Timed, Timer};
use rooflab_harness::report::{self, model::*};

const GPU: &str = "NVIDIA H100 80GB HBM3";
const BANDWIDTH: f64 = 3016.0;
const TENSOR: f64 = 786.0;

/// Plays an H100: rooflab's kernels reach a fixed fraction of the roof that applies, naive a much
/// smaller one, with a few percent of deterministic jitter between launches.
struct SyntheticGpu;

fn roof_time_us(case: &Case) -> f64 {
    let memory_us = case.work.bytes / (BANDWIDTH * 1e9) * 1e6;
    let compute_us = case.work.flops / (TENSOR * 1e12) * 1e6;
    memory_us.max(compute_us)
}

impl Timer for SyntheticGpu {
    fn time(&mut self, case: &Case, plan: &Plan) -> Result<Vec<Timed>> {
        let (ours, naive) = match case.suite {
            Suite::Attention => (0.42, 0.03),
            Suite::Decode => (0.71, 0.18),
            Suite::Gemv => (0.83, 0.35),
            Suite::Spec => (0.55, 0.12),
            Suite::E2e => (0.35, 0.05),
        };
        // A few microseconds of launch overhead, as a real GPU has.
        let times = |fraction: f64| -> Vec<f64> {
            (0..plan.iterations)
                .map(|k| (roof_time_us(case) / fraction + 3.0) * (1.0 + 0.004 * ((k * 7) % 11) as f64))
                .collect()
        };
        Ok(vec![
            Timed { variant: "rooflab".into(), times_us: times(ours) },
            Timed { variant: NAIVE.into(), times_us: times(naive) },
        ])
    }
}

fn run_json(gpu: &str, date: &str, commit: &str) -> Run {
    Run {
        rooflab_version: "0.1.0".into(),
        commit: commit.into(),
        date: date.into(),
        command: "rooflab bench --suite all --quick".into(),
        environment: vec!["ROOFLAB_PREFILL_FLASH=tma".into()],
        suites: ["attention", "decode", "gemv", "spec", "e2e"].map(String::from).to_vec(),
        quick: true,
        gpu: Gpu {
            name: gpu.into(),
            sm_count: 132,
            memory_bytes: 85_520_809_984,
            compute_capability: "9.0".into(),
            driver: "580.95.05".into(),
        },
        host_kernel: Some("6.18.44-fc-v310-gpu".into()),
        before: Conditions {
            sm_clock_mhz: Some(1980.0),
            memory_clock_mhz: Some(2619.0),
            temperature_c: Some(34.0),
            power_w: Some(72.0),
        },
        after: Conditions {
            sm_clock_mhz: Some(1755.0),
            memory_clock_mhz: Some(2619.0),
            temperature_c: Some(61.0),
            power_w: Some(88.0),
        },
        ceilings: Ceilings {
            bandwidth_gbps: BANDWIDTH,
            bandwidth_method: "device-to-device copy of 4 GiB, read + write".into(),
            bf16_tflops: TENSOR,
            bf16_method: "cuBLAS bf16 GEMM 8192x8192x8192".into(),
        },
        failures: vec![],
        appended: vec![],
    }
}

fn synthetic_cases() -> Vec<Case> {
    let mut cases = bench::cases_for(&Suite::ALL, true);
    cases.extend(bench::e2e_cases("SmolLM2-135M-Instruct", 269_060_736, 134_515_008, true));
    cases
}

/// Writes a full synthetic run under `root` and returns its folder.
fn write_synthetic_run(root: &Path, gpu: &str, date: &str, commit: &str) -> std::path::PathBuf {
    let run = run_json(gpu, date, commit);
    let measured = bench::measure(&mut SyntheticGpu, &synthetic_cases(), &Plan::new(true), &run.ceilings).unwrap();
    assert!(measured.failures.is_empty());
    bench::write_run(root, &run, &measured.rows).unwrap()
}

/// Peer rows at the DESIGN's rates: SDPA flash / cuDNN attention, cuBLAS and tinygemm GEMV.
fn write_peers(dir: &Path, gpu: &str) {
    let mut attention = Vec::new();
    let mut gemv = Vec::new();
    for case in synthetic_cases() {
        let shape = case.shape();
        let row = |peer: &str, us: f64| {
            serde_json::json!({
                "suite": case.suite.name(), "kernel": case.kernel, "peer": peer, "shape": shape, "dtype": case.dtype,
                "median_us": us, "p10_us": us * 0.99, "p90_us": us * 1.03, "note": "synthetic"
            })
        };
        match case.suite {
            Suite::Attention => {
                attention.push(row("torch_sdpa_flash", case.work.flops / 253e12 * 1e6));
                attention.push(row("torch_sdpa_cudnn", case.work.flops / 455e12 * 1e6));
            }
            Suite::Decode => {
                attention.push(row("torch_sdpa_flash", case.work.bytes / 1439e9 * 1e6));
                attention.push(row("torch_sdpa_cudnn", case.work.bytes / 1902e9 * 1e6));
            }
            Suite::Gemv if case.dtype == "bf16" => gemv.push(row("cublas", case.work.bytes / 1832e9 * 1e6)),
            Suite::Gemv if case.dtype == "int4" => gemv.push(row("tinygemm_int4", case.work.bytes / 1100e9 * 1e6)),
            _ => {}
        }
    }
    for (file, rows, script) in
        [("peers_attention.json", attention, "peers_attention.py"), ("peers_gemv.json", gemv, "peers_gemv.py")]
    {
        let doc = serde_json::json!({
            "gpu": gpu, "torch": "2.11.0+cu130", "cuda": "13.0", "date": "2026-11-24", "script": script, "rows": rows
        });
        std::fs::write(dir.join(file), serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
}

/// Every file in a folder (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn regenerate_twice_gives_identical_bytes() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_synthetic_run(root.path(), GPU, "2026-11-24", "a1b2c3d4e5f6");
    let from_bench = snapshot(&dir);
    // Regenerating the bench's own output changes nothing: the report is a function of the raw files.
    report::regenerate(&dir).unwrap();
    assert_eq!(snapshot(&dir), from_bench);

    write_peers(&dir, GPU);
    report::regenerate(&dir).unwrap();
    let first = snapshot(&dir);
    report::regenerate(&dir).unwrap();
    let second = snapshot(&dir);
    assert_eq!(first.keys().collect::<Vec<_>>(), second.keys().collect::<Vec<_>>());
    for (name, bytes) in &first {
        assert!(bytes == &second[name], "{name} changed on the second regenerate");
    }
    assert_ne!(first["summary.csv"], from_bench["summary.csv"], "the peer merge should add rows");
    for name in ["report.md", "roofline.svg", "attention.svg", "decode.svg", "gemv.svg", "summary.csv", "run.json"] {
        assert!(first.contains_key(name), "{name} missing");
    }
    assert!(!first.keys().any(|k| k.contains("rooflab-tmp")), "temporary files left behind");
}

#[test]
fn summary_has_the_contract_columns_and_realistic_rows() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_synthetic_run(root.path(), GPU, "2026-11-24", "a1b2c3d4e5f6");
    let text = read(&dir, "summary.csv");
    assert_eq!(
        text.lines().next().unwrap(),
        "suite,kernel,variant,shape,dtype,median_us,p10_us,p90_us,gbps,tflops,intensity,pct_of_ceiling,speedup_vs_naive,peer,ratio_vs_peer"
    );
    let rows = report::load_summary(&dir).unwrap();
    assert_eq!(rows.len(), 2 * synthetic_cases().len());
    let decode = rows.iter().find(|r| r.kernel == "attention_decode" && r.variant == "rooflab").unwrap();
    assert_eq!(decode.shape, "B=1 H=32 KVH=8 L=4096 D=128");
    let pct = decode.pct_of_ceiling.unwrap();
    assert!(pct > 50.0 && pct < 71.0, "decode at {pct}% of bandwidth");
    assert!(decode.speedup_vs_naive.unwrap() > 2.0);
    let prefill = rows.iter().find(|r| r.kernel == "attention_prefill" && r.variant == "rooflab").unwrap();
    assert!(prefill.intensity.unwrap() > run_json(GPU, "2026-11-24", "x").ceilings.ridge(), "prefill is compute-bound");
    assert!((prefill.pct_of_ceiling.unwrap() - 100.0 * prefill.tflops.unwrap() / TENSOR).abs() < 0.1);
    assert!(rows.iter().all(|r| r.peer.is_empty() && r.ratio_vs_peer.is_none()), "no peers merged yet");
}

#[test]
fn peer_merge_fills_ratio_columns() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_synthetic_run(root.path(), GPU, "2026-11-24", "a1b2c3d4e5f6");
    write_peers(&dir, GPU);
    report::regenerate(&dir).unwrap();
    let rows = report::load_summary(&dir).unwrap();
    let shape = "B=1 H=32 KVH=8 S=4096 D=128 causal";
    let find = |variant: &str, peer: &str| {
        rows.iter()
            .find(|r| {
                r.kernel == "attention_prefill"
                    && r.shape == shape
                    && r.variant == variant
                    && (peer.is_empty() || r.peer == peer)
            })
            .unwrap_or_else(|| panic!("no {variant} {peer} row"))
    };
    let ours = find("rooflab", "");
    let flash = find(PEER, "torch_sdpa_flash");
    let cudnn = find(PEER, "torch_sdpa_cudnn");
    // The fastest peer (cuDNN, 455 TFLOP/s) is the one rooflab is compared with.
    assert_eq!(ours.peer, "torch_sdpa_cudnn");
    let expected = cudnn.median_us / ours.median_us;
    assert!((ours.ratio_vs_peer.unwrap() - expected).abs() < 2e-3, "{:?} vs {expected}", ours.ratio_vs_peer);
    // Peer rows borrow rooflab's FLOP count: SDPA flash comes out at the 253 TFLOP/s it was given.
    assert!((flash.tflops.unwrap() - 253.0).abs() < 0.5, "{:?}", flash.tflops);
    assert!((cudnn.pct_of_ceiling.unwrap() - 100.0 * 455.0 / TENSOR).abs() < 0.2);
    assert_eq!(flash.ratio_vs_peer, None);
    // GEMV: bf16 rows compare with cuBLAS, int4 rows with tinygemm, never across dtypes.
    let gemv_bf16 = rows.iter().find(|r| r.kernel == "gemv" && r.dtype == "bf16" && r.variant == "rooflab").unwrap();
    let gemv_int4 = rows.iter().find(|r| r.kernel == "gemv" && r.dtype == "int4" && r.variant == "rooflab").unwrap();
    assert_eq!(gemv_bf16.peer, "cublas");
    assert_eq!(gemv_int4.peer, "tinygemm_int4");
    // The naive row is compared with the peer too, and spec rows (no peer script) have none.
    assert_eq!(find(NAIVE, "").peer, "torch_sdpa_cudnn");
    assert!(rows.iter().filter(|r| r.suite == "spec").all(|r| r.peer.is_empty()));

    let report = read(&dir, "report.md");
    assert!(report.contains("| vs torch_sdpa_cudnn | vs torch_sdpa_flash |"), "per-peer columns missing");
    assert!(report.contains("peers_attention.json: torch 2.11.0+cu130, CUDA 13.0, 2026-11-24"));
}

#[test]
fn report_header_tables_and_figure_links() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_synthetic_run(root.path(), GPU, "2026-11-24", "a1b2c3d4e5f6");
    write_peers(&dir, GPU);
    report::regenerate(&dir).unwrap();
    let report = read(&dir, "report.md");
    for needle in [
        "# rooflab report: NVIDIA H100 80GB HBM3, 2026-11-24",
        "| Host kernel | 6.18.44-fc-v310-gpu (`uname -r` of the machine that measured) |",
        "| Commit | `a1b2c3d4e5f6` |",
        "| Command | `rooflab bench --suite all --quick` |",
        "| Environment | `ROOFLAB_PREFILL_FLASH=tma` |",
        "| Memory bandwidth ceiling | 3016 GB/s",
        "| bf16 tensor-core ceiling | 786 TFLOP/s",
        "| Ridge point | 261 FLOP/byte",
        "SM clock 1980 MHz, memory clock 2619 MHz, 34 °C, 72 W",
        "## At a glance",
        "## attention",
        "### attention_prefill · bf16",
        "## decode",
        "### gemv · int4",
        "## e2e",
        " tok/s |",
        "![",
        "(roofline.svg)",
        "(attention.svg)",
        "(decode.svg)",
        "(gemv.svg)",
    ] {
        assert!(report.contains(needle), "report.md lacks {needle:?}");
    }
    assert!(!report.contains("NaN") && !report.contains("inf"), "non-finite number in the report");
}

#[test]
fn svgs_are_well_formed_and_name_the_kernels() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_synthetic_run(root.path(), GPU, "2026-11-24", "a1b2c3d4e5f6");
    write_peers(&dir, GPU);
    report::regenerate(&dir).unwrap();
    let expectations = [
        ("roofline.svg", vec!["attention_prefill", "attention_decode", "gemv", "torch_sdpa_cudnn", "3016 GB/s"]),
        ("attention.svg", vec!["attention_prefill", "torch_sdpa_flash", "rooflab", "786 TFLOP/s"]),
        ("decode.svg", vec!["attention_decode", "torch_sdpa_cudnn", "naive"]),
        ("gemv.svg", vec!["gemv", "cublas", "tinygemm_int4"]),
    ];
    for (file, needles) in expectations {
        let svg = read(&dir, file);
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{file} is not well-formed XML: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let text: String =
            doc.descendants().filter(|n| n.is_text()).map(|n| n.text().unwrap_or("")).collect::<Vec<_>>().join("\n");
        for needle in needles {
            assert!(text.contains(needle), "{file} has no text {needle:?}");
        }
    }
}

#[test]
fn bad_folders_give_one_line_errors() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("nope");
    let err = format!("{:#}", report::regenerate(&missing).unwrap_err());
    assert!(err.contains("nope") && err.contains("not a folder"), "{err}");
    assert!(!err.contains('\n'));

    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = format!("{:#}", report::regenerate(&empty).unwrap_err());
    assert!(err.contains("no run.json"), "{err}");

    let foreign = root.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("run.json"), serde_json::to_string(&run_json(GPU, "2026-11-24", "x")).unwrap())
        .unwrap();
    std::fs::write(foreign.join("summary.csv"), "name,time_ms\nmatmul,1.5\n").unwrap();
    let err = format!("{:#}", report::regenerate(&foreign).unwrap_err());
    assert!(err.contains("summary.csv has columns [name, time_ms]"), "{err}");
    assert!(!err.contains('\n'));
    assert!(!foreign.join("report.md").exists(), "nothing may be written for a foreign folder");

    std::fs::write(foreign.join("run.json"), "{\"hello\": 1}").unwrap();
    let err = format!("{:#}", report::regenerate(&foreign).unwrap_err());
    assert!(err.contains("not a rooflab run.json"), "{err}");
}

#[test]
fn peer_from_another_gpu_is_refused_and_nothing_changes() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_synthetic_run(root.path(), GPU, "2026-11-24", "a1b2c3d4e5f6");
    write_peers(&dir, GPU);
    report::regenerate(&dir).unwrap();
    let before = snapshot(&dir);
    std::fs::remove_file(dir.join("peers_gemv.json")).unwrap();
    write_peers(&dir, "NVIDIA H200");
    let after_write = snapshot(&dir);
    let err = format!("{:#}", report::regenerate(&dir).unwrap_err());
    assert!(err.contains("peers_attention.json") && err.contains("NVIDIA H200") && err.contains(GPU), "{err}");
    assert!(!err.contains('\n'));
    let after = snapshot(&dir);
    assert_eq!(after, after_write, "a refused merge must leave every file as it was");
    for name in ["summary.csv", "report.md", "roofline.svg"] {
        assert_eq!(after[name], before[name], "{name} was overwritten");
    }
}

#[test]
fn results_readme_links_the_latest_run_per_device() {
    let root = tempfile::tempdir().unwrap();
    write_synthetic_run(root.path(), GPU, "2026-11-20", "1111111");
    write_synthetic_run(root.path(), GPU, "2026-11-24", "2222222");
    write_synthetic_run(root.path(), "NVIDIA H200", "2026-11-22", "3333333");
    std::fs::create_dir_all(root.path().join("nvidia-h200/broken")).unwrap();
    std::fs::write(root.path().join("nvidia-h200/broken/run.json"), "{ not json").unwrap();
    std::fs::create_dir_all(root.path().join("golden/smollm2")).unwrap();
    report::write_results_index(root.path()).unwrap();
    let index = read(root.path(), "README.md");
    assert!(index.contains("[2026-11-24-2222222](nvidia-h100-80gb-hbm3/2026-11-24-2222222/report.md)"), "{index}");
    assert!(index.contains("[2026-11-22-3333333](nvidia-h200/2026-11-22-3333333/report.md)"), "{index}");
    assert!(index.contains("1 run folder(s) whose run.json cannot be read"), "{index}");
    assert!(!index.contains("golden"), "folders without run.json are not runs: {index}");
    let latest_table = index.split("## All runs").next().unwrap();
    assert!(!latest_table.contains("1111111"), "an older run is listed as the latest");
    // The index is a function of the folders: rendering again gives the same text.
    assert_eq!(report::render_results_index(root.path()).unwrap(), index);
}

#[test]
fn report_command_refreshes_the_results_index() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let dir = write_synthetic_run(&results, GPU, "2026-11-24", "a1b2c3d4e5f6");
    std::fs::remove_file(results.join("README.md")).unwrap();
    write_peers(&dir, GPU);
    report::regenerate_with_index(&dir).unwrap();
    let index = read(&results, "README.md");
    assert!(index.contains("nvidia-h100-80gb-hbm3/2026-11-24-a1b2c3d4e5f6/report.md"), "{index}");
    // A run folder outside results/ gets no index written next to it.
    let elsewhere = tmp.path().join("scratch");
    let other = write_synthetic_run(&elsewhere, GPU, "2026-11-24", "a1b2c3d4e5f6");
    std::fs::remove_file(elsewhere.join("README.md")).unwrap();
    report::regenerate_with_index(&other).unwrap();
    assert!(!elsewhere.join("README.md").exists());
}

/// scripts/gpu-collect files what one gpu-run call sent back: the run folder (its report reproduced here
/// byte for byte) and results/README.md, the logs, criterion's estimates without its HTML; and it never
/// files a run over one already there.
#[test]
fn gpu_collect_files_what_a_device_call_sent_back_under_results() {
    let sh = |dir: &Path, script: &str| {
        let status = std::process::Command::new("bash").arg("-c").arg(script).current_dir(dir).status().unwrap();
        assert!(status.success(), "{script}");
    };
    // What the device wrote and gpu-run packed.
    let device = tempfile::tempdir().unwrap();
    let device_run = write_synthetic_run(&device.path().join("results"), GPU, "2026-11-25", "abcdef012345");
    let files = tempfile::tempdir().unwrap();
    let at = files.path().to_str().unwrap();
    sh(device.path(), &format!("tar -czf {at}/results.tar.gz results"));
    sh(
        device.path(),
        &format!(
            "mkdir -p criterion/attention/rooflab/new criterion/report && echo '{{}}' > criterion/attention/rooflab/new/estimates.json \
             && echo '<html>' > criterion/report/index.html && tar -czf {at}/criterion.tar.gz criterion"
        ),
    );
    let summary =
        "gpu-run: tests+generate+bench (tests=smollm2 generate bench=e2e) at 2026-11-25T10:00:00Z, bundle commit abcdef0123456789abcdef0123456789abcdef01, budget 540 s\n\
                   gpu: NVIDIA H100 80GB HBM3, 580.95.05, 81559 MiB, 1980 MHz\nok: tests/test-gpu: 33 passed\n";
    std::fs::write(files.path().join("summary.txt"), summary).unwrap();
    std::fs::write(files.path().join("tests.log"), "test result: ok\n").unwrap();
    std::fs::write(files.path().join("generate.log"), "TTFT 3.1 ms\n").unwrap();

    let here = tempfile::tempdir().unwrap();
    let results = here.path().join("results");
    let collect = || {
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/gpu-collect"))
            .arg(files.path())
            .env("ROOFLAB_RESULTS", &results)
            .env("ROOFLAB_BIN", env!("CARGO_BIN_EXE_rooflab"))
            .output()
            .unwrap()
    };
    let out = collect();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = results.join("nvidia-h100-80gb-hbm3").join(device_run.file_name().unwrap());
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(&run.join("report.md")), read(&device_run.join("report.md")));
    assert!(read(&results.join("README.md")).contains(device_run.file_name().unwrap().to_str().unwrap()));
    let logs = results.join("nvidia-h100-80gb-hbm3/logs/2026-11-25-abcdef012345-tests-generate-bench");
    assert_eq!(read(&logs.join("summary.txt")), summary);
    assert!(logs.join("generate.log").is_file());
    assert!(logs.join("tests.log").is_file() && logs.join("criterion/attention/rooflab/new/estimates.json").is_file());
    assert!(!logs.join("criterion/report").exists(), "criterion's HTML stays behind");

    // The same files again: this call was filed, so nothing is filed twice.
    let again = collect();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("this call was filed already"));
    assert!(!results.join("nvidia-h100-80gb-hbm3/logs/2026-11-25-abcdef012345-tests-generate-bench-2").exists());

    // The session's next call measured more into the same run (`GPU_RUN_INTO=last`): the grown run replaces
    // the one filed, and its logs get a folder of their own.
    let run_json = device_run.join("run.json");
    let mut grown: Run = serde_json::from_str(&read(&run_json)).unwrap();
    grown.appended.push(Appended {
        command: "rooflab bench --suite decode --quick --into results/...".into(),
        date: grown.date.clone(),
        suites: vec!["decode".into()],
        ceilings: grown.ceilings.clone(),
        before: grown.before.clone(),
        host_kernel: grown.host_kernel.clone(),
    });
    std::fs::write(&run_json, serde_json::to_string_pretty(&grown).unwrap()).unwrap();
    report::regenerate(&device_run).unwrap();
    sh(device.path(), &format!("tar -czf {at}/results.tar.gz results"));
    let call_2 = |at: &str| summary.replace("10:00:00Z", at).replace("bench=e2e", "bench=decode");
    std::fs::write(files.path().join("summary.txt"), call_2("10:08:00Z")).unwrap();
    let out = collect();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("grown:"), "{}", String::from_utf8_lossy(&out.stdout));
    let filed_grown = read(&run.join("run.json"));
    assert_eq!(filed_grown, read(&run_json));
    assert_eq!(read(&run.join("report.md")), read(&device_run.join("report.md")));
    assert!(results.join("nvidia-h100-80gb-hbm3/logs/2026-11-25-abcdef012345-tests-generate-bench-2").is_dir());

    // A run of the same name that is not that run grown (here: another environment) is never filed over it.
    let mut other = grown.clone();
    other.environment = vec!["ROOFLAB_DECODE=unfused".into()];
    std::fs::write(&run_json, serde_json::to_string_pretty(&other).unwrap()).unwrap();
    report::regenerate(&device_run).unwrap();
    sh(device.path(), &format!("tar -czf {at}/results.tar.gz results"));
    std::fs::write(files.path().join("summary.txt"), call_2("10:20:00Z")).unwrap();
    let refused = collect();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("not the same run grown") && err.contains("environment differs"), "{err}");
    assert_eq!(read(&run.join("run.json")), filed_grown);
}

/// A peer script run for some of its suites (`--suites decode`, as gpu-run passes when a later call benches
/// decode into a run whose attention an earlier call measured) keeps the rows the earlier call wrote for
/// the others, and takes nothing from a file of another GPU.
#[test]
fn peer_scripts_keep_the_rows_of_suites_they_did_not_time() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import json, sys
from argparse import Namespace
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import peerlib

out = Path(sys.argv[2]) / "peers_attention.json"
def doc(gpu, suites, rows):
    return {"gpu": gpu, "script": "peers_attention.py", "suites": suites,
            "rows": [{"suite": s, "shape": shape, "median_us": us} for s, shape, us in rows],
            "skipped": [{"suite": "decode", "peer": "torch_sdpa_cudnn", "shape": "L=1", "reason": "old"}]}
args = Namespace(suites="decode,gemv")
assert peerlib.selected_suites(args, ["attention", "decode"]) == ["decode"]
assert peerlib.selected_suites(Namespace(suites=None), ["attention", "decode"]) == ["attention", "decode"]
assert peerlib.selected_suites(Namespace(suites="e2e"), ["attention", "decode"]) == []

peerlib.write_json(out, doc("H100", ["attention", "decode"], [("attention", "S=1", 5.0), ("decode", "L=1", 1.0)]))
new = doc("H100", ["decode"], [("decode", "L=1", 2.0), ("decode", "L=2", 3.0)])
new["skipped"] = []
peerlib.write_json(out, new)
got = json.loads(out.read_text())
assert [(r["suite"], r["shape"], r["median_us"]) for r in got["rows"]] == [
    ("attention", "S=1", 5.0), ("decode", "L=1", 2.0), ("decode", "L=2", 3.0)], got
assert got["skipped"] == [], got  # the old decode skip was taken up again
assert got["suites"] == ["attention", "decode"], got

peerlib.write_json(out, doc("H200", ["decode"], [("decode", "L=1", 9.0)]))
got = json.loads(out.read_text())
assert [r["suite"] for r in got["rows"]] == ["decode"], got
print("ok")
"#;
    let peers = concat!(env!("CARGO_MANIFEST_DIR"), "/../harness/peers");
    let out = std::process::Command::new("python3")
        .args(["-c", script, peers, dir.path().to_str().unwrap()])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
