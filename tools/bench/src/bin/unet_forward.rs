//! `unet-forward`: loads an artifact's `unet.onnx` (external data and all) with tract or ONNX
//! Runtime (CPU) and runs UNet forwards on seeded random inputs; prints load and run times, the
//! output's statistics and this process's peak RSS. Proves the > 2 GB external-data path end to
//! end on full-size builds, and times the UNet.
//!
//!     unet-forward --model DIR --runtime tract|ort [--batch 2] [--frames 16] [--latent 8] [--runs 1]

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value = "tract")]
    runtime: String,
    #[arg(long, default_value_t = 2)]
    batch: usize,
    #[arg(long, default_value_t = 16)]
    frames: usize,
    /// Latent height and width (image size / 8).
    #[arg(long, default_value_t = 8)]
    latent: usize,
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Write the output as raw little-endian f32 to this file (to compare runtimes).
    #[arg(long)]
    save: Option<PathBuf>,
    /// ONNX Runtime library (else ORT_DYLIB_PATH, else .ort/ from tools/setup.sh).
    #[arg(long)]
    ort_library: Option<PathBuf>,
}

/// Deterministic pseudo-normal numbers (sum of uniforms), enough for timing inputs.
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let mut acc = 0f32;
            for _ in 0..4 {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                acc += (s >> 40) as f32 / (1u64 << 24) as f32;
            }
            (acc - 2.0) * 1.7
        })
        .collect()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let a = Args::parse();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.model.join("manifest.json")).expect("manifest.json")).expect("manifest");
    let d = manifest["architecture"]["text_encoder"]["hidden_size"].as_u64().unwrap() as usize;
    let (b, f, h) = (a.batch, a.frames, a.latent);
    let sample_shape = [b, 4, f, h, h];
    let sample = noise(b * 4 * f * h * h, 1);
    let timestep: Vec<f32> = (0..b).map(|i| 981.0 - 40.0 * i as f32).collect();
    let context = noise(b * 77 * d, 2);
    let path = a.model.join("unet.onnx");

    let t0 = Instant::now();
    let mut times = Vec::new();
    let out: Vec<f32> = match a.runtime.as_str() {
        "tract" => {
            use tract_onnx::prelude::*;
            let mut m = tract_onnx::onnx().model_for_path(&path).expect("tract load");
            m.set_input_fact(0, f32::fact(sample_shape).into()).unwrap();
            m.set_input_fact(1, f32::fact([b]).into()).unwrap();
            m.set_input_fact(2, f32::fact([b, 77, d]).into()).unwrap();
            let plan = m.into_optimized().and_then(|m| m.into_runnable()).expect("tract optimise");
            eprintln!("tract: loaded and optimised in {:.2}s, peak RSS {:.0} MiB", t0.elapsed().as_secs_f64(), peak_rss_mib());
            let mut last = Vec::new();
            for _ in 0..a.runs {
                let inputs: TVec<TValue> = tvec![
                    Tensor::from_shape(&sample_shape, &sample).unwrap().into(),
                    Tensor::from_shape(&[b], &timestep).unwrap().into(),
                    Tensor::from_shape(&[b, 77, d], &context).unwrap().into(),
                ];
                let t = Instant::now();
                let o = plan.run(inputs).expect("tract run");
                times.push(t.elapsed().as_secs_f64());
                last = o[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
            }
            last
        }
        "ort" => {
            let lib = a
                .ort_library
                .clone()
                .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
                .or_else(|| {
                    std::fs::read_dir(".ort").ok()?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so."))
                    })
                })
                .expect("no ONNX Runtime library: run tools/setup.sh or pass --ort-library");
            let env = ort::init_from(&lib).expect("loading ONNX Runtime").build().unwrap();
            let mut session = ort::session::Session::builder(&env).unwrap().commit_from_file(&path).expect("ORT load");
            eprintln!("ort: session created in {:.2}s, peak RSS {:.0} MiB", t0.elapsed().as_secs_f64(), peak_rss_mib());
            let mut last = Vec::new();
            for _ in 0..a.runs {
                let inputs = ort::inputs![
                    "sample" => ort::value::Tensor::from_array((sample_shape.to_vec(), sample.clone())).unwrap(),
                    "timestep" => ort::value::Tensor::from_array((vec![b], timestep.clone())).unwrap(),
                    "encoder_hidden_states" => ort::value::Tensor::from_array((vec![b, 77, d], context.clone())).unwrap(),
                ];
                let t = Instant::now();
                let o = session.run(inputs).expect("ORT run");
                times.push(t.elapsed().as_secs_f64());
                last = o[0].try_extract_tensor::<f32>().unwrap().1.to_vec();
            }
            last
        }
        other => panic!("unknown runtime `{other}`: tract or ort"),
    };
    if let Some(p) = &a.save {
        std::fs::write(p, out.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).expect("writing --save");
    }
    let finite = out.iter().all(|v| v.is_finite());
    let mean = out.iter().map(|&v| v as f64).sum::<f64>() / out.len() as f64;
    let std = (out.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / out.len() as f64).sqrt();
    let mut sorted = times.clone();
    sorted.sort_by(|x, y| x.partial_cmp(y).unwrap());
    println!(
        "{}: UNet forward B={b} F={f} {h}x{h} latents: runs {:?} s, median {:.3} s; output {} values, finite {finite}, mean {mean:.4}, std {std:.4}; peak RSS {:.0} MiB",
        a.runtime,
        times.iter().map(|t| (t * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        sorted[sorted.len() / 2],
        out.len(),
        peak_rss_mib()
    );
    if !finite {
        std::process::exit(1);
    }
}
