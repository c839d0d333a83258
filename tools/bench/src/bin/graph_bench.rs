//! `graph-bench`: times an artifact's three graphs through the product's own runtime layer
//! (`animatediff_runtime::Runtime`, exactly what `animate` uses) on one execution provider:
//!
//! - text encoder: one forward of `(2, 77)` token ids (the CFG pair);
//! - UNet + motion modules: one forward at CFG batch 2, `--frames` frames, for each `--latents` size;
//! - VAE decoder: one frame, for each `--latents` size.
//!
//! Inputs are shared through `--io DIR` as `.npy` files: the first run writes them (seeded), later
//! runs (other providers, and the PyTorch peer `tools/bench/peer_pytorch.py`) read the same
//! files, and every run writes its outputs there for `tools/bench/report.py` to compare. Results
//! go to stdout as one JSON object per line.
//!
//!     graph-bench --model DIR --ep tract|cpu|cuda|tensorrt --io DIR [--latents 8,16] [--runs 5]

use std::path::{Path, PathBuf};
use std::time::Instant;

use animatediff_runtime::{noise, ClipTokenizer, Ep, GraphSession, InputSpec, Runtime, RuntimeOptions, Tensor};
use clap::Parser;
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{read_npy, write_npy};

#[derive(Parser)]
struct Args {
    /// Artifact directory written by build-graph.
    #[arg(long)]
    model: PathBuf,
    /// Execution provider: tract, cpu, cuda, tensorrt.
    #[arg(long, default_value = "tract")]
    ep: Ep,
    /// Folder for shared inputs and this run's outputs (.npy).
    #[arg(long)]
    io: PathBuf,
    /// Latent sizes (pixels / 8), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "8,16")]
    latents: Vec<usize>,
    #[arg(long, default_value_t = 16)]
    frames: usize,
    /// Timed runs per graph (the median is reported); one untimed warm-up run precedes them.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Which graphs: any of text_encoder, unet, vae_decoder.
    #[arg(long, value_delimiter = ',', default_value = "text_encoder,unet,vae_decoder")]
    graphs: Vec<String>,
    /// ONNX Runtime library (else ORT_DYLIB_PATH, else .ort/ from tools/setup.sh).
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// TensorRT engine cache directory.
    #[arg(long)]
    trt_cache: Option<PathBuf>,
    /// Label for the JSON lines and output files (default: the provider's name).
    #[arg(long)]
    label: Option<String>,
    /// Also time a single fp32 N×N×N matrix multiply (an ONNX MatMul graph) on this runtime: the
    /// machine's GEMM ceiling as this runtime reaches it. 0: skip.
    #[arg(long, default_value_t = 4096)]
    gemm: usize,
    /// After timing, run each graph once more timing every operation (tract only) and write the
    /// per-operation table to DIR/<label>_<graph>[_<size>].tsv; the heaviest kinds go to stderr.
    #[arg(long)]
    profile: Option<PathBuf>,
}

/// Writes one profiled run as a table and prints where its time went.
fn write_profile(dir: &Path, name: &str, ops: &[animatediff_runtime::OpTiming]) {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir).expect("creating --profile");
    let mut tsv = String::from("seconds\top\tnode\tinput_shapes\tlive_mib\tinfo\n");
    for o in ops {
        let _ = writeln!(tsv, "{:.6}\t{}\t{}\t{:?}\t{:.1}\t{}", o.seconds, o.op, o.node, o.input_shapes, o.live_bytes as f64 / MIB, o.info);
    }
    let path = dir.join(format!("{name}.tsv"));
    std::fs::write(&path, tsv).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let total: f64 = ops.iter().map(|o| o.seconds).sum();
    let mut by_op: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for o in ops {
        let e = by_op.entry(&o.op).or_default();
        e.0 += o.seconds;
        e.1 += 1;
    }
    let mut rows: Vec<_> = by_op.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    eprintln!("{name}: {total:.3} s in {} operations ({})", ops.len(), path.display());
    for (op, (t, n)) in rows.iter().take(15) {
        eprintln!("  {:>8.3} s {:>5.1} %  {n:>5} x {op}", t, 100.0 * t / total);
    }
    if let Some(peak) = ops.iter().max_by_key(|o| o.live_bytes).filter(|o| o.live_bytes > 0) {
        let alive = &peak.alive_at_peak;
        eprintln!("{name}: activations peak at {:.0} MiB after {} ({} alive; largest:)", peak.live_bytes as f64 / MIB, peak.node, alive.len());
        for (node, b) in alive.iter().take(12) {
            eprintln!("  {:>8.1} MiB  {node}", *b as f64 / MIB);
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// The shared input `name`: read if present, else `make()` written and returned.
fn shared_f32(io: &Path, name: &str, shape: &[usize], make: impl FnOnce() -> Vec<f32>) -> Vec<f32> {
    let p = io.join(format!("{name}.npy"));
    if p.is_file() {
        let a: ArrayD<f32> = read_npy(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(a.shape(), shape, "{}: shape {:?}, expected {shape:?}", p.display(), a.shape());
        return a.iter().copied().collect();
    }
    let v = make();
    write_npy(&p, &ArrayD::from_shape_vec(IxDyn(shape), v.clone()).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    v
}

fn shared_ids(io: &Path, model: &Path) -> Vec<i64> {
    let p = io.join("text_ids.npy");
    if p.is_file() {
        let a: ArrayD<i64> = read_npy(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        return a.iter().copied().collect();
    }
    let tok = ClipTokenizer::from_file(&model.join("tokenizer.json")).expect("tokenizer.json");
    let uncond = tok.encode("").unwrap();
    let cond = tok.encode("a corgi running on a beach at sunset, highly detailed, 4k").unwrap();
    let v: Vec<i64> = uncond.into_iter().chain(cond).collect();
    write_npy(&p, &ArrayD::from_shape_vec(IxDyn(&[2, 77]), v.clone()).unwrap()).unwrap();
    v
}

struct Timing {
    load_s: f64,
    runs_s: Vec<f64>,
    shape: Vec<usize>,
    out: Vec<f32>,
}

fn time_graph(session: &mut dyn GraphSession, inputs: &[Tensor], runs: usize, load_s: f64) -> Timing {
    let (shape, mut out) = session.run(inputs).unwrap_or_else(|e| panic!("{e}"));
    let mut runs_s = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let (_, o) = session.run(inputs).unwrap_or_else(|e| panic!("{e}"));
        runs_s.push(t.elapsed().as_secs_f64());
        out = o;
    }
    Timing { load_s, runs_s, shape, out }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        f64::NAN
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    }
}

fn main() {
    let a = Args::parse();
    std::fs::create_dir_all(&a.io).expect("creating --io");
    let label = a.label.clone().unwrap_or_else(|| a.ep.to_string());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.model.join("manifest.json")).expect("manifest.json")).expect("manifest");
    let d = manifest["architecture"]["text_encoder"]["hidden_size"].as_u64().expect("hidden_size") as usize;
    let c = manifest["architecture"]["unet"]["in_channels"].as_u64().unwrap_or(4) as usize;
    let runtime = Runtime::new(RuntimeOptions {
        ep: a.ep,
        fallback: false,
        ort_library: a.ort_library.clone(),
        trt_cache: a.trt_cache.clone(),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    let report = |graph: &str, size: Option<usize>, t: &Timing| {
        let name = match size {
            Some(s) => format!("{label}_{graph}_{s}"),
            None => format!("{label}_{graph}"),
        };
        write_npy(a.io.join(format!("{name}.npy")), &ArrayD::from_shape_vec(IxDyn(&t.shape), t.out.clone()).unwrap()).unwrap();
        let line = serde_json::json!({
            "runtime": label, "graph": graph, "latent": size, "frames": if graph == "unet" { Some(a.frames) } else { None },
            "load_s": t.load_s, "runs_s": t.runs_s, "median_s": median(&t.runs_s),
            "peak_rss_mib": peak_rss_mib(), "threads": threads, "output": name,
        });
        println!("{line}");
    };

    if a.gemm > 0 {
        let n = a.gemm;
        let path = a.io.join(format!("gemm_{n}.onnx"));
        if !path.is_file() {
            use onnx_writer::{Dim, ElemType, Graph, WeightStorage};
            let mut g = Graph::new("gemm", 17, WeightStorage::Inline);
            let x = g.input("x", ElemType::F32, &[Dim::Fixed(n), Dim::Fixed(n)]);
            let w = g.weight("w", &[n, n], &noise::gaussian(5, n * n)).expect("gemm weight");
            let y = g.op("MatMul", &[&x, &w], vec![]);
            g.output(&y, "y", ElemType::F32, &[Dim::Fixed(n), Dim::Fixed(n)]);
            g.finish(&path, "graph-bench", &[]).expect("writing the GEMM graph");
        }
        let mut s = runtime.load(&path, &[InputSpec::f32([n, n])]).unwrap_or_else(|e| panic!("{e}"));
        let t = time_graph(s.as_mut(), &[Tensor::F32 { shape: vec![n, n], data: noise::gaussian(6, n * n) }], a.runs, 0.0);
        let med = median(&t.runs_s);
        println!(
            "{}",
            serde_json::json!({ "runtime": format!("{label} gemm"), "graph": "sgemm", "n": n, "runs_s": t.runs_s, "median_s": med,
                "gflops": 2.0 * (n as f64).powi(3) / med / 1e9, "threads": threads })
        );
    }
    let want = |g: &str| a.graphs.iter().any(|x| x == g);
    if want("text_encoder") {
        let ids = shared_ids(&a.io, &a.model);
        let t0 = Instant::now();
        let mut s = runtime.load(&a.model.join("text_encoder.onnx"), &[InputSpec::i64([2, 77])]).unwrap_or_else(|e| panic!("{e}"));
        let load = t0.elapsed().as_secs_f64();
        let t = time_graph(s.as_mut(), &[Tensor::I64 { shape: vec![2, 77], data: ids }], a.runs, load);
        report("text_encoder", None, &t);
    }
    if want("unet") {
        let windows = animatediff_runtime::Artifact::open(&a.model).is_ok_and(|x| x.motion_windows());
        let context = shared_f32(&a.io, "unet_context", &[2, 77, d], || noise::gaussian(2, 2 * 77 * d));
        let timestep = vec![981.0f32, 981.0];
        for &h in &a.latents {
            let shape = vec![2, c, a.frames, h, h];
            let sample = shared_f32(&a.io, &format!("unet_sample_{h}"), &shape, || noise::gaussian(1, shape.iter().product()));
            let mut specs = vec![InputSpec::f32(shape.clone()), InputSpec::f32([2]), InputSpec::f32([2, 77, d])];
            let mut inputs = vec![
                Tensor::F32 { shape: shape.clone(), data: sample },
                Tensor::F32 { shape: vec![2], data: timestep.clone() },
                Tensor::F32 { shape: vec![2, 77, d], data: context.clone() },
            ];
            if windows {
                // the plain motion modules: one window of every frame, the identity as fuse
                let f = a.frames;
                specs.extend([InputSpec::i64([1, f]), InputSpec::f32([f, 1, f])]);
                inputs.push(Tensor::I64 { shape: vec![1, f], data: (0..f as i64).collect() });
                inputs.push(Tensor::F32 { shape: vec![f, 1, f], data: (0..f * f).map(|i| if i / f == i % f { 1.0 } else { 0.0 }).collect() });
            }
            let t0 = Instant::now();
            let mut s = runtime.load(&a.model.join("unet.onnx"), &specs).unwrap_or_else(|e| panic!("{e}"));
            let load = t0.elapsed().as_secs_f64();
            let t = time_graph(s.as_mut(), &inputs, a.runs, load);
            if let Some(dir) = &a.profile {
                if let Some(ops) = s.profile(&inputs).unwrap_or_else(|e| panic!("{e}")) {
                    write_profile(dir, &format!("{label}_unet_{h}"), &ops);
                }
            }
            drop(s);
            report("unet", Some(h), &t);
        }
    }
    if want("vae_decoder") {
        for &h in &a.latents {
            let shape = vec![1, c, h, h];
            let z = shared_f32(&a.io, &format!("vae_latent_{h}"), &shape, || noise::gaussian(3, c * h * h));
            let t0 = Instant::now();
            let mut s = runtime.load(&a.model.join("vae_decoder.onnx"), &[InputSpec::f32(shape.clone())]).unwrap_or_else(|e| panic!("{e}"));
            let load = t0.elapsed().as_secs_f64();
            let inputs = [Tensor::F32 { shape, data: z }];
            let t = time_graph(s.as_mut(), &inputs, a.runs, load);
            if let Some(dir) = &a.profile {
                if let Some(ops) = s.profile(&inputs).unwrap_or_else(|e| panic!("{e}")) {
                    write_profile(dir, &format!("{label}_vae_decoder_{h}"), &ops);
                }
            }
            report("vae_decoder", Some(h), &t);
        }
    }
}
