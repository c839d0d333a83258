//! `build-graph`: bakes a base SD1.5 model, a personalised checkpoint, LoRAs and an AnimateDiff
//! motion module into ONNX (text encoder, UNet with motion modules, VAE decoder), plus the
//! tokenizer and a manifest. See the README for the artifact layout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use animatediff_build::{build, BuildOptions, Error, Precision};
use animatediff_cli::limits;

#[derive(Parser)]
#[command(version, about = "Bake SD1.5 + personalised checkpoint + LoRAs + AnimateDiff motion module into ONNX")]
struct Args {
    #[command(flatten)]
    model: animatediff_cli::args::ModelArgs,
    /// Apply LoRAs even when some of their keys match no weight (listed as warnings); by default
    /// such keys are an error.
    #[arg(long)]
    lora_ignore_unmatched: bool,
    /// Build even when a weight (of a checkpoint, the motion module or a LoRA, or merged with a
    /// LoRA) holds NaN or infinite values; by default that is an error naming the file and tensor.
    #[arg(long)]
    allow_nonfinite: bool,
    /// Textual-inversion embedding to bake in, repeatable: an A1111 .pt or .safetensors
    /// (emb_params, or an SDXL file's clip_l) or a diffusers learned_embeds.bin, optionally with
    /// its trigger word after a `:` (default: the file's stem, e.g. easynegative for
    /// easynegative.safetensors). Prompts use the trigger word (any case) where the embedding's
    /// vectors go.
    #[arg(long = "embedding", value_name = "FILE[:TOKEN]")]
    embeddings: Vec<animatediff_build::EmbeddingSpec>,
    /// AnimateDiff motion module (.ckpt or .safetensors, official or diffusers layout).
    #[arg(long)]
    motion_module: PathBuf,
    /// Fix the frame count (symbolic by default; TensorRT prefers fixed shapes): 1 to the motion
    /// module's maximum.
    #[arg(long, value_parser = limits::parse::frames)]
    frames: Option<usize>,
    /// Fix the image height in pixels: a multiple of 8 from 8 to 2048 (larger sizes exceed what
    /// the runtimes can allocate).
    #[arg(long, value_parser = limits::parse::side)]
    height: Option<usize>,
    /// Fix the image width in pixels: a multiple of 8 from 8 to 2048.
    #[arg(long, value_parser = limits::parse::side)]
    width: Option<usize>,
    /// Weight and compute precision of the text encoder and UNet (fp16 keeps GroupNorm/LayerNorm
    /// statistics and softmax in fp32; graph inputs and outputs stay f32).
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    /// Precision of the VAE decoder: fp32 unless asked (the SD VAE overflows in fp16).
    #[arg(long, default_value = "fp32")]
    vae_precision: Precision,
    /// ONNX opset, 17 to 99 (`--attention sdpa` raises it to 23).
    #[arg(long, default_value_t = onnx_writer::DEFAULT_OPSET, value_parser = limits::parse::opset, allow_hyphen_values = true)]
    opset: i64,
    /// ONNX form of the UNet's and VAE decoder's attentions: `mha` (ONNX Runtime's
    /// com.microsoft.MultiHeadAttention: tiled on ORT CPU in fp32, fused on CUDA and DirectML,
    /// block by block on tract; the score matrix is never built), `sdpa` (ONNX Attention, opset 23: for
    /// TensorRT >= 10.14 and tract; ORT CPU builds the scores) or `plain` (MatMul-Softmax-MatMul
    /// with Q pre-scaled, which TensorRT fuses in fp16; every runtime builds the scores, which at
    /// 512x512 need tens of GB). CLIP's causal attention is always plain.
    #[arg(long, default_value = "mha")]
    attention: onnx_writer::AttentionForm,
    /// Output directory: new, empty, or a complete artifact of ours, which is replaced. Written to
    /// a temporary name beside it and renamed when complete; builds into one directory wait for
    /// each other (a lock on `.NAME.lock` beside it).
    #[arg(long)]
    out: PathBuf,
    /// Replace a directory at --out that is not a complete artifact of ours (another artifact
    /// version, extra files): only the files its manifest lists are replaced; other files stay.
    #[arg(long)]
    force: bool,
    /// Give the UNet the motion-window inputs FreeNoise needs (`animate --context freenoise`);
    /// without it the motion modules carry no window operations and cost nothing extra.
    #[arg(long)]
    motion_windows: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Do not store the golden bundle (it runs every graph once with tract at small shapes,
    /// which for a full-size model takes ~15 s and several GB of memory).
    #[arg(long)]
    no_golden: bool,
    /// Write every weight again even when `--out` holds an artifact built from the same files.
    /// By default such a rebuild re-uses the hashes of unchanged input files and, when only LoRA
    /// multipliers changed, the UNet weights no LoRA touches (hard links; same bytes as a fresh
    /// build).
    #[arg(long)]
    no_reuse: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let opts = options(a);
    let start = std::time::Instant::now();
    match build(&opts) {
        Ok(report) => {
            for w in &report.warnings {
                eprintln!("build-graph: warning: {w}");
            }
            if !opts.quiet && report.reused_bytes > 0 {
                eprintln!(
                    "build-graph: re-used {:.2} GB of UNet weights no LoRA changes from the previous artifact (only LoRA multipliers changed; --no-reuse writes everything)",
                    report.reused_bytes as f64 / 1e9
                );
            }
            if !opts.quiet {
                eprintln!(
                    "build-graph: wrote {} ({} motion module, {} LoRA(s), {} embedding(s)) in {:.1}s",
                    report.out.display(),
                    report.manifest.motion_version,
                    opts.loras.len(),
                    opts.embeddings.len(),
                    start.elapsed().as_secs_f64()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("build-graph: error: {e}");
            if let Some(hint) = flag_hint(&e) {
                eprintln!("build-graph: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn options(a: Args) -> BuildOptions {
    BuildOptions {
        base: a.model.base,
        personalized: a.model.personalized,
        loras: a.model.loras,
        lora_scaling: a.model.lora_scaling,
        lora_ignore_unmatched: a.lora_ignore_unmatched,
        embeddings: a.embeddings,
        allow_nonfinite: a.allow_nonfinite,
        motion_module: a.motion_module,
        motion_version: a.model.motion_version,
        arch: a.model.arch,
        frames: a.frames,
        height: a.height,
        width: a.width,
        precision: a.precision,
        vae_precision: a.vae_precision,
        out: a.out,
        opset: a.opset,
        attention: a.attention,
        motion_windows: a.motion_windows,
        quiet: a.quiet,
        max_file_bytes: onnx_writer::MAX_EXTERNAL_FILE_BYTES,
        golden: !a.no_golden,
        reuse: !a.no_reuse,
        force: a.force,
        on_notice: |n| eprintln!("build-graph: {n}"),
    }
}

/// The flag that fixes an error the library names by its option.
fn flag_hint(e: &Error) -> Option<String> {
    Some(match e {
        Error::NotMultipleOf8 { option, .. } => format!("check --{option}"),
        Error::NoModel => "pass --base and/or --personalized".into(),
        Error::MissingComponents { .. } => "pass a --base model that has the missing components".into(),
        Error::Frames { max, .. } => format!("pass --frames 1 to {max}, or leave it out for any count"),
        Error::LoraUnmatched { .. } => "pass --lora-ignore-unmatched to apply the keys that do match".into(),
        _ => return None,
    })
}
