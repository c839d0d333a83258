//! `animate`: tokenises prompts, samples (DDIM, Euler, Euler a, DPM++ 2M, LCM) with classifier-free guidance over an artifact's graphs
//! on tract (default, pure Rust) or ONNX Runtime (CPU, CUDA, TensorRT, DirectML), and writes an
//! animated GIF, an animated WebP, an H.264 MP4 or PNG frames.
//!
//!     animate --model DIR --prompt TEXT [--negative TEXT] [--seed N] [--steps 25] [--guidance 7.5]
//!             [--frames 16] [--width 512] [--height 512] [--ep tract|cpu|cuda|tensorrt|directml] [--ep-fallback]
//!             [--scheduler ddim|euler|euler-ancestral|dpmpp-2m|lcm] [--karras] [--timestep-spacing S] [--eta X]
//!             [--prompt-syntax a1111|plain] [--clip-skip N] [--noise torch|splitmix] [--noise-out FILE.npy] [--latents-in FILE.npy] [--latents-out FILE.npy]
//!             [--fps 8] [--quality 80] --out FILE.gif|FILE.webp|FILE.mp4|DIR/ | --frames-dir DIR
//!     animate --config prompts.yaml --model DIR --out DIR
//!     animate --demo [--demo-model base|personalized|random] --out demo.gif
//!     animate check --model DIR --ep A [--against B | --golden FILE.npz] [--tolerance X] [--json]
//!     animate check --model DIR --verify [--json]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use animatediff_build::out_dir::Notice;
use animatediff_cli::{demo, latents, limits, media, prompt_config};
use animatediff_runtime::noise::NoiseKind;
use animatediff_runtime::{
    check_clip_skip, check_sampling, Artifact, ClipTokenizer, ContextFuse, ContextMethod, ContextOptions, Ep, Pipeline, PromptSyntax, Runtime, RuntimeOptions,
    SamplePlan, SamplerKind, SamplerOptions, Sampling, TextConditioning,
    Spacing, TokenizedPrompt, VideoShape,
};

#[derive(Parser)]
#[command(version, about = "Animate prompts with an AnimateDiff ONNX artifact (made by build-graph)", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Check that an artifact gives the same numbers on a runtime as on another one, or as in a
    /// golden bundle (by default the one build-graph stored in the artifact); also verifies every
    /// file's SHA-256. Exits non-zero on any failure.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Artifact directory written by build-graph.
    #[arg(long)]
    model: PathBuf,
    /// Runtime to check.
    #[arg(long, default_value = "tract")]
    ep: Ep,
    /// Compare with this runtime instead of the golden bundle.
    #[arg(long, conflicts_with = "golden")]
    against: Option<Ep>,
    /// Golden bundle (.npz) to compare with; default: the artifact's own `golden.npz`.
    #[arg(long)]
    golden: Option<PathBuf>,
    /// Bound on max |error| / max |reference| (default 1e-4 for fp32 artifacts, 3e-2 for fp16).
    #[arg(long)]
    tolerance: Option<f64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Only verify every file's SHA-256 against the manifest, running no graph (a quick check of
    /// a copied or downloaded artifact; sizes are checked on every load).
    #[arg(long, conflicts_with_all = ["against", "golden", "tolerance"])]
    verify: bool,
    #[arg(long)]
    ort_library: Option<PathBuf>,
    #[arg(long)]
    trt_cache: Option<PathBuf>,
}

#[derive(clap::Args)]
struct Args {
    /// Artifact directory written by build-graph.
    #[arg(long)]
    model: Option<PathBuf>,
    /// What to animate.
    #[arg(long)]
    prompt: Option<String>,
    /// Prompt travel: the prompt from frame FRAME on, `FRAME:TEXT`, repeatable (instead of
    /// --prompt). Frames between keyframes blend their text embeddings linearly; frames before the
    /// first keyframe and after the last hold it (with --closed-loop the last blends back into
    /// the first). The negative prompt stays one for the whole video.
    #[arg(long = "prompt-at", value_name = "FRAME:TEXT", value_parser = limits::parse::prompt_at, conflicts_with_all = ["prompt", "config"])]
    prompt_at: Vec<(usize, String)>,
    /// Long videos: sample more frames than the motion module takes (16 trained, 24 or 32 at most)
    /// in overlapping windows. uniform: the UNet runs on each window and the windows' noise
    /// predictions are fused (AnimateDiff-Evolved's static windows; memory of one window).
    /// freenoise: diffusers' FreeNoise, the motion modules attend in windows inside one UNet run
    /// over every frame, with its re-scheduled noise (memory grows with the frames).
    #[arg(long)]
    context: Option<ContextMethod>,
    /// Frames per context window (default 16, what the motion modules were trained on; at most
    /// the module's maximum).
    #[arg(long, value_parser = limits::parse::context_length)]
    context_length: Option<usize>,
    /// Frames neighbouring windows share (default 4): windows start every length − overlap frames.
    #[arg(long, value_parser = limits::parse::context_overlap)]
    context_overlap: Option<usize>,
    /// How overlapping windows are fused: pyramid (the default: weights rising towards each
    /// window's centre) or flat (the mean).
    #[arg(long)]
    context_fuse: Option<ContextFuse>,
    /// Loop: windows wrap around the end so the last frames blend into the first (and prompt
    /// travel runs from the last keyframe back to the first).
    #[arg(long)]
    closed_loop: bool,
    /// Negative prompt (the unconditional half of classifier-free guidance).
    #[arg(long, default_value = "")]
    negative: String,
    /// How prompts are read: a1111 (the default: (word:1.2) weights, BREAK, prompts longer than
    /// 75 tokens in chunks, as AUTOMATIC1111 and ComfyUI) or plain (the official AnimateDiff
    /// code: brackets are text, tokens past 75 are dropped). See the README's prompt syntax.
    #[arg(long, default_value = "a1111")]
    prompt_syntax: PromptSyntax,
    /// CLIP skip as A1111 numbers it: 1 = the text encoder's last layer (the default), 2 = the
    /// one before (what most anime models want; ComfyUI's CLIPSetLastLayer -2, diffusers'
    /// clip_skip=1); -2 is read as 2. At most the text encoder's depth (12 for SD1.5).
    #[arg(long, default_value_t = 1, value_parser = limits::parse::clip_skip, allow_hyphen_values = true)]
    clip_skip: usize,
    /// Seed of the initial noise, 0 to 2^64-1 (random, and printed, when absent).
    #[arg(long, value_parser = limits::parse::seed, allow_hyphen_values = true)]
    seed: Option<u64>,
    /// Denoising steps: 1 to 1000 (at most the model's training timesteps).
    #[arg(long, default_value_t = 25, value_parser = limits::parse::steps)]
    steps: usize,
    /// Sampler: ddim (the official one), euler, euler-ancestral, dpmpp-2m or lcm, each as current
    /// diffusers' scheduler of that name (see the README's sampler table).
    #[arg(long, default_value = "ddim")]
    scheduler: SamplerKind,
    /// Karras sigmas (euler and dpmpp-2m; DPM++ 2M Karras is `--scheduler dpmpp-2m --karras`).
    #[arg(long)]
    karras: bool,
    /// Timestep spacing: leading, linspace or trailing (default: the sampler's own in diffusers,
    /// leading for ddim, linspace for euler, euler-ancestral and dpmpp-2m; lcm has its own
    /// schedule). AnimateDiff-Lightning wants `--scheduler euler --timestep-spacing trailing`.
    #[arg(long)]
    timestep_spacing: Option<Spacing>,
    /// DDIM's η, a number from 0 (deterministic, the default) to 1.
    #[arg(long, value_parser = limits::parse::eta)]
    eta: Option<f32>,
    /// Seed to noise: torch (PyTorch's CPU generator, bit for bit: the same noise as ComfyUI and
    /// diffusers with a CPU generator for the same seed) or splitmix (this tool's earlier generator).
    #[arg(long, default_value = "torch")]
    noise: NoiseKind,
    /// Write the drawn initial noise (unit variance, before the sampler's scaling) as f32 .npy:
    /// exactly what --latents-in accepts.
    #[arg(long, conflicts_with = "latents_in")]
    noise_out: Option<PathBuf>,
    /// Classifier-free guidance scale, a finite number from 0 to 100 (active when > 1); default 7.5.
    #[arg(long, value_parser = limits::parse::guidance, allow_hyphen_values = true)]
    guidance: Option<f32>,
    /// Frames: 1 to the motion module's maximum (24 or 32 for the official ones), or up to 4096
    /// with --context; default 16.
    #[arg(long, value_parser = limits::parse::frames)]
    frames: Option<usize>,
    /// Width in pixels: a multiple of 8 from 8 to 2048 (SD1.5 works at 512; larger sizes exceed
    /// what the runtimes can allocate); default 512.
    #[arg(long, value_parser = limits::parse::side)]
    width: Option<usize>,
    /// Height in pixels: a multiple of 8 from 8 to 2048; default 512.
    #[arg(long, value_parser = limits::parse::side)]
    height: Option<usize>,
    /// Where the graphs run.
    #[arg(long, default_value = "tract")]
    ep: Ep,
    /// Fall back to another provider when the requested one is unavailable (always reported).
    #[arg(long)]
    ep_fallback: bool,
    /// ONNX Runtime shared library (else ORT_DYLIB_PATH, else .ort/ from tools/setup.sh).
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// TensorRT engine cache directory.
    #[arg(long)]
    trt_cache: Option<PathBuf>,
    /// Start from this unit-variance noise (f32 .npy of shape (1, 4, F, h, w), diffusers'
    /// `latents=`: the sampler multiplies it by its initial σ) instead of seeded noise; the seed
    /// then serves only the per-step noise of ancestral samplers.
    #[arg(long)]
    latents_in: Option<PathBuf>,
    /// Write the final latents (before decoding) as f32 .npy.
    #[arg(long)]
    latents_out: Option<PathBuf>,
    /// Frames per second of GIF/WebP/MP4 output, 1 to 100 (the official code writes 8).
    #[arg(long, default_value_t = 8, value_parser = limits::parse::fps)]
    fps: u32,
    /// MP4 quality, 1 to 100 (a constant H.264 quantiser: 1 = QP 51, smallest; 100 = QP 12,
    /// best); default 80 (QP 20). Only for --out FILE.mp4.
    #[arg(long, value_parser = limits::parse::quality)]
    quality: Option<u8>,
    /// AnimateDiff prompt config (YAML): one output per prompt, into --out DIR.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Animate the embedded micro model (trained on coloured shapes moving in captioned directions,
    /// 64×64, 16 frames), building it once into a cache; default prompt "a red circle moving left".
    #[arg(long)]
    demo: bool,
    /// Which embedded demo model (implies --demo): the trained base model, its personalised
    /// variant (fine-tuned on another style from stills, same motion module), or the random
    /// fixture set (noise frames).
    #[arg(long, value_enum)]
    demo_model: Option<demo::DemoModel>,
    /// `FILE.gif`, `FILE.webp`, `FILE.mp4` (H.264, yuv420p, BT.601), or a directory (`DIR/`: PNG
    /// frames `frame_0000.png`, ...; with --config, one output per prompt). A frames directory
    /// must be new, empty, or frames an earlier run wrote (nothing else is replaced).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write PNG frames into this directory (as --out DIR/).
    #[arg(long, conflicts_with_all = ["out", "config"])]
    frames_dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

struct Job {
    name: String,
    format: media::Format,
    prompt: String,
    negative: String,
    seed: Option<u64>,
    sampling: Sampling,
    shape: VideoShape,
    out: PathBuf,
    syntax: PromptSyntax,
    clip_skip: usize,
    /// Prompt travel's `(frame, prompt)` keyframes (empty: `prompt` for every frame).
    keyframes: Vec<(usize, String)>,
    context: Option<ContextOptions>,
    closed_loop: bool,
}

/// A job's prompts as the text encoder takes them.
struct Prompts {
    negative: TokenizedPrompt,
    prompt: TokenizedPrompt,
    /// Prompt travel's keyframes, tokenized (empty without).
    keyframes: Vec<(usize, TokenizedPrompt)>,
}

impl Prompts {
    /// The UNet's context length for them: 77 per chunk of the longest one.
    fn tokens(&self) -> usize {
        let chunks = self.keyframes.iter().map(|(_, p)| p.chunks.len()).chain([self.negative.chunks.len(), self.prompt.chunks.len()]).max();
        77 * chunks.unwrap_or(1)
    }
}

fn bar(quiet: bool, len: u64, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(ProgressStyle::with_template("{msg:<12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}").unwrap().progress_chars("=> "));
    b.set_message(what.to_owned());
    b
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (t as u64) ^ ((std::process::id() as u64) << 32)
}

fn write_latents(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), String> {
    let a = ndarray::ArrayD::from_shape_vec(shape.to_vec(), data.to_vec()).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("npy.partial");
    ndarray_npy::write_npy(&tmp, &a).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn slug(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').chars().take(40).collect()
}

fn notify(n: &Notice) {
    eprintln!("animate: {n}");
}

fn run(mut args: Args) -> Result<(), String> {
    args.demo |= args.demo_model.is_some();
    if args.model.is_none() && !args.demo {
        return Err("--model DIR is required (or --demo)".into());
    }
    if args.prompt.is_none() && args.prompt_at.is_empty() && args.config.is_none() && !args.demo {
        return Err("--prompt TEXT is required (or --prompt-at FRAME:TEXT, --config FILE, or --demo)".into());
    }
    let (out, format) = match (&args.out, &args.frames_dir) {
        (Some(out), _) => (out.clone(), media::Format::of(out)),
        (None, Some(dir)) => (dir.clone(), media::Format::PngDir),
        (None, None) => return Err("--out FILE.gif|FILE.webp|FILE.mp4|DIR/ (or --frames-dir DIR) is required".into()),
    };
    let format = format.with_quality(args.quality)?;
    if args.config.is_none() {
        media::check(&out, format, &notify)?; // before any work
    }
    let jobs = jobs(&args, &out, format)?; // a bad prompt config fails before the model is opened or built
    let model = model_dir(&args)?;
    let artifact = Artifact::open(&model).map_err(with_flags)?;
    if args.config.is_some() {
        for job in &jobs {
            media::check(&job.out, job.format, &notify)?;
        }
    }
    if args.latents_in.is_some() && jobs.len() > 1 {
        return Err("--latents-in applies to a single prompt, not to a --config batch".into());
    }
    let prompts = check_jobs(&artifact, &jobs)?;
    let latents_in = match (&args.latents_in, jobs.first()) {
        (Some(path), Some(job)) => Some(latents::read(path, &latent_shape(&artifact, job)).map_err(|e| format!("--latents-in {e}"))?),
        _ => None,
    };
    let runtime = Runtime::new(RuntimeOptions {
        ep: args.ep,
        fallback: args.ep_fallback,
        ort_library: args.ort_library.clone(),
        trt_cache: args.trt_cache.clone(),
        ..Default::default()
    })
    .map_err(with_flags)?;
    for n in &runtime.notes {
        eprintln!("animate: {n}");
    }
    let (mut pipeline, mut latents_in): (Option<Pipeline>, _) = (None, latents_in);
    for (job, prompts) in jobs.iter().zip(&prompts) {
        let plan = SamplePlan { tokens: prompts.tokens(), context: job.context, per_frame: !job.keyframes.is_empty() };
        if pipeline.as_ref().is_none_or(|p| p.shape != job.shape) {
            drop(pipeline.take()); // free the previous shape's graphs before loading the next (peak memory)
            pipeline = Some(load(&artifact, &runtime, job.shape, plan, args.quiet)?);
        }
        render(&args, job, prompts, latents_in.take(), pipeline.as_mut().expect("loaded above"), &runtime)?;
    }
    Ok(())
}

/// Checks every job's video shape, sampling settings, CLIP skip and prompts against the model
/// before any graph loads, with the runtime's own checks (the ones `Pipeline::load`, `encode_prompts`
/// and `sample` make): frames within the motion module's maximum, a sampler with options it has
/// and steps it can take, finite guidance, a CLIP skip within the text encoder's depth, prompts
/// that parse. Returns the jobs' prompts, tokenized.
fn check_jobs(artifact: &Artifact, jobs: &[Job]) -> Result<Vec<Prompts>, String> {
    let tokenizer = ClipTokenizer::for_artifact(artifact).map_err(with_flags)?;
    let mut all = Vec::with_capacity(jobs.len());
    for job in jobs {
        let tokenized = job
            .shape
            .check_with(artifact, job.context.as_ref())
            .and_then(|()| check_sampling(artifact, &job.sampling))
            .and_then(|()| check_clip_skip(artifact, job.clip_skip))
            .and_then(|()| check_keyframes(artifact, job))
            .and_then(|()| {
                let negative = tokenizer.tokenize(&job.negative, job.syntax)?;
                let prompt = tokenizer.tokenize(&job.prompt, job.syntax)?;
                let keyframes = job.keyframes.iter().map(|(f, p)| Ok((*f, tokenizer.tokenize(p, job.syntax)?))).collect::<animatediff_runtime::Result<_>>()?;
                Ok(Prompts { negative, prompt, keyframes })
            })
            .map_err(|e| match jobs.len() {
                1 => with_flags(e),
                _ => format!("job {}: {}", job.name, with_flags(e)),
            })?;
        for (which, p) in [("negative prompt", &tokenized.negative), ("prompt", &tokenized.prompt)] {
            if p.truncated > 0 {
                eprintln!(
                    "animate: {}: the {which} has {} tokens; --prompt-syntax plain keeps the first 75 (a1111 keeps them all, in chunks)",
                    job.name, p.token_count
                );
            }
        }
        all.push(tokenized);
    }
    Ok(all)
}

/// Prompt travel's keyframes against the job and the model: frames of the video, one prompt each,
/// and a UNet that takes one context per frame.
fn check_keyframes(artifact: &Artifact, job: &Job) -> animatediff_runtime::Result<()> {
    use animatediff_runtime::{Error, Setting};
    let invalid = |value: String, reason: String| Err(Error::Invalid { setting: Setting::Keyframes, value, reason });
    if job.keyframes.is_empty() {
        return Ok(());
    }
    if !artifact.per_frame_context() {
        return invalid(
            format!("{} keyframes", job.keyframes.len()),
            "this artifact's UNet takes one text context per video (it was built before prompt travel); rebuild it with build-graph".into(),
        );
    }
    let mut frames: Vec<usize> = job.keyframes.iter().map(|k| k.0).collect();
    frames.sort_unstable();
    if let Some(f) = frames.iter().find(|&&f| f >= job.shape.frames) {
        return invalid(f.to_string(), format!("a keyframe must be a frame of the video, 0 to {}", job.shape.frames - 1));
    }
    if let Some(pair) = frames.windows(2).find(|p| p[0] == p[1]) {
        return invalid(pair[0].to_string(), "two prompts for the same frame; give each frame one".into());
    }
    Ok(())
}

/// The shape of a job's latents: `(1, channels, frames, height / 8, width / 8)`.
fn latent_shape(artifact: &Artifact, job: &Job) -> [usize; 5] {
    [1, artifact.latent_channels(), job.shape.frames, job.shape.height / 8, job.shape.width / 8]
}

/// The artifact directory: `--model`, or the demo model (built into its cache if not there).
fn model_dir(args: &Args) -> Result<PathBuf, String> {
    if !args.demo {
        return Ok(args.model.clone().expect("run() checked --model"));
    }
    let spinner = bar(args.quiet, 1, "demo model");
    let (dir, built) = demo::artifact_of(args.demo_model.unwrap_or(demo::DemoModel::Base), true)?;
    spinner.finish_and_clear();
    if built && !args.quiet {
        eprintln!("animate: built the demo model into {}", dir.display());
    }
    Ok(dir)
}

/// The jobs: one prompt, a prompt config's, or the demo prompt.
fn jobs(args: &Args, out: &Path, format: media::Format) -> Result<Vec<Job>, String> {
    let default_px = if args.demo { 64 } else { 512 };
    let default_guidance = if args.demo { demo::DEFAULT_GUIDANCE } else { 7.5 };
    let shape = |frames: Option<usize>, height: Option<usize>, width: Option<usize>| VideoShape {
        frames: args.frames.or(frames).unwrap_or(16),
        height: args.height.or(height).unwrap_or(default_px),
        width: args.width.or(width).unwrap_or(default_px),
    };
    let sampler = |keys: prompt_config::SamplerKeys| SamplerOptions {
        kind: keys.kind.unwrap_or(args.scheduler),
        karras: keys.karras.unwrap_or(args.karras),
        spacing: keys.spacing.or(args.timestep_spacing),
        eta: keys.eta.or(args.eta).unwrap_or(0.0),
    };
    let context = |keys: prompt_config::ContextKeys| -> Result<Option<ContextOptions>, String> {
        let method = keys.method.or(args.context);
        let given = [keys.length.is_some() || args.context_length.is_some(), keys.overlap.is_some() || args.context_overlap.is_some(), keys.fuse.is_some() || args.context_fuse.is_some()];
        let Some(method) = method else {
            if given.iter().any(|&g| g) {
                return Err("--context-length, --context-overlap and --context-fuse need --context uniform|freenoise (or a config's `context`)".into());
            }
            return Ok(None);
        };
        let d = ContextOptions::default();
        Ok(Some(ContextOptions {
            method,
            length: keys.length.or(args.context_length).unwrap_or(d.length),
            overlap: keys.overlap.or(args.context_overlap).unwrap_or(d.overlap),
            fuse: keys.fuse.or(args.context_fuse).unwrap_or(d.fuse),
            closed_loop: keys.closed_loop.unwrap_or(args.closed_loop),
        }))
    };
    let Some(cfg) = &args.config else {
        let keyframes = args.prompt_at.clone();
        let prompt = match keyframes.first() {
            Some((_, p)) => p.clone(),
            None => args.prompt.clone().unwrap_or_else(|| demo::DEFAULT_PROMPT.into()),
        };
        return Ok(vec![Job {
            name: "prompt".into(),
            prompt,
            keyframes,
            context: context(Default::default())?,
            closed_loop: args.closed_loop,
            negative: args.negative.clone(),
            seed: args.seed,
            sampling: Sampling { sampler: sampler(Default::default()), steps: args.steps, guidance: args.guidance.unwrap_or(default_guidance) },
            shape: shape(None, None, None),
            out: out.to_path_buf(),
            format,
            syntax: args.prompt_syntax,
            clip_skip: args.clip_skip,
        }]);
    };
    if media::Format::of(out) != media::Format::PngDir {
        return Err(format!("--config writes one output per prompt: --out must be a directory, not {}", out.display()));
    }
    let (list, notes) = prompt_config::load(cfg)?;
    for n in notes {
        eprintln!("animate: {}: {n}", cfg.display());
    }
    let job = |(i, j): (usize, prompt_config::Job)| -> Result<Job, String> {
        let name = j.keyframes.first().map_or(&j.prompt, |k| &k.1);
        Ok(Job {
        out: out.join(format!("{i:03}-{}.gif", slug(name))),
        context: context(j.context).map_err(|e| format!("{}: entry {}: {e}", cfg.display(), j.name))?,
        closed_loop: j.context.closed_loop.unwrap_or(args.closed_loop),
        prompt: j.keyframes.first().map_or(j.prompt.clone(), |k| k.1.clone()),
        keyframes: j.keyframes,
        format: media::Format::Gif,
        shape: shape(j.frames, j.height, j.width),
        name: j.name,
        negative: j.negative,
        seed: j.seed,
        sampling: Sampling {
            sampler: sampler(j.sampler),
            steps: j.steps.unwrap_or(args.steps),
            guidance: j.guidance.or(args.guidance).unwrap_or(default_guidance),
        },
        syntax: j.prompt_syntax.unwrap_or(args.prompt_syntax),
        clip_skip: j.clip_skip.unwrap_or(args.clip_skip),
        })
    };
    list.into_iter().enumerate().map(job).collect()
}

/// The pipeline for one video shape, with a progress bar over its graphs.
fn load(artifact: &Artifact, runtime: &Runtime, shape: VideoShape, plan: SamplePlan, quiet: bool) -> Result<Pipeline, String> {
    let loading = bar(quiet, 3, "loading");
    let p = Pipeline::load_with(artifact.clone(), runtime, shape, plan, |what| {
        loading.set_message(format!("loading {what}"));
        loading.inc(1);
    })
    .map_err(with_flags)?;
    loading.finish_and_clear();
    for w in &p.warnings {
        eprintln!("animate: warning: {w}");
    }
    Ok(p)
}

/// One job: noise (or the `--latents-in` latents, read and checked by `run`), prompts, sampling, decoding, the output file.
fn render(args: &Args, job: &Job, prompts: &Prompts, latents_in: Option<ndarray::ArrayD<f32>>, p: &mut Pipeline, runtime: &Runtime) -> Result<(), String> {
    let quiet = args.quiet;
    let start = Instant::now();
    let latent_shape = latent_shape(&p.artifact, job);
    // the seed's generator draws the initial noise (unless given) and then the per-step noise
    let seed = job.seed.unwrap_or_else(random_seed);
    let mut generator = args.noise.generator(seed);
    p.set_context(job.context).map_err(with_flags)?;
    let noise = match latents_in {
        Some(a) => a.iter().copied().collect(),
        None => p.initial_noise(generator.as_mut()), // FreeNoise re-schedules it, as diffusers
    };
    if let Some(path) = &args.noise_out {
        write_latents(path, &latent_shape, &noise)?;
    }
    let text = if prompts.keyframes.is_empty() {
        let ctx = p.encode_prompts(&prompts.negative, &prompts.prompt, job.clip_skip).map_err(with_flags)?;
        TextConditioning::from_pair(&p.artifact, &ctx).map_err(with_flags)?
    } else {
        p.encode_travel(&prompts.negative, &prompts.keyframes, job.shape.frames, job.closed_loop, job.clip_skip).map_err(with_flags)?
    };
    if prompts.tokens() != p.unet_tokens() {
        let reloading = bar(quiet, 1, "loading UNet");
        p.load_unet_for_tokens(prompts.tokens()).map_err(with_flags)?; // for this context length (tract fixes it)
        reloading.finish_and_clear();
    }
    let steps = bar(quiet, job.sampling.steps as u64, "denoising");
    let latents = p.sample_conditioned(&text, noise, &job.sampling, generator.as_mut(), |_, _| steps.inc(1)).map_err(with_flags)?;
    steps.finish_and_clear();
    if let Some(path) = &args.latents_out {
        write_latents(path, &latent_shape, &latents)?;
    }
    let decoding = bar(quiet, job.shape.frames as u64, "decoding");
    let frames = p.decode(&latents, |_| decoding.inc(1)).map_err(with_flags)?;
    decoding.finish_and_clear();
    media::write(&job.out, job.format, &frames, args.fps, &notify)?;
    if !quiet {
        let seed = match args.latents_in {
            Some(_) => format!("noise from --latents-in, {} seed {seed} for the steps", args.noise.name()),
            None => format!("{} seed {seed}", args.noise.name()),
        };
        let (name, out, shape, sampling) = (&job.name, job.out.display(), job.shape, &job.sampling);
        let sampler = describe_sampler(&sampling.sampler);
        let mut text = String::new();
        if prompts.tokens() > 77 {
            text += &format!(", prompt {} chunks", prompts.tokens() / 77);
        }
        if job.clip_skip > 1 {
            text += &format!(", clip skip {}", job.clip_skip);
        }
        if !job.keyframes.is_empty() {
            text += &format!(", {} keyframes", job.keyframes.len());
        }
        if let Some(c) = job.context {
            let looped = if c.closed_loop { ", closed loop" } else { "" };
            text += &format!(", {} windows of {} overlapping {} ({}{looped})", c.method, c.length, c.overlap, c.fuse);
        }
        eprintln!(
            "animate: {name} -> {out} ({} frames {}x{}, {sampler}, {} steps, guidance {}{text}, {seed}, {} on {}, {:.1}s)",
            frames.len(),
            shape.width,
            shape.height,
            sampling.steps,
            sampling.guidance,
            p.artifact.motion_version(),
            runtime.ep,
            start.elapsed().as_secs_f64()
        );
    } else if job.seed.is_none() {
        // a random seed is always reported, so the video can be made again
        eprintln!("animate: {}: seed {seed}", job.name);
    }
    Ok(())
}

/// `dpmpp-2m karras linspace`, `ddim leading eta 0.5`: the sampler as the summary line names it.
fn describe_sampler(o: &SamplerOptions) -> String {
    let mut s = o.kind.to_string();
    if o.karras {
        s.push_str(" karras");
    }
    if o.kind != SamplerKind::Lcm {
        s = format!("{s} {}", o.spacing().name());
    }
    if o.eta != 0.0 {
        s = format!("{s} eta {}", o.eta);
    }
    s
}

/// A runtime error as `animate` reports it: the library settings it names as this command's flags.
fn with_flags(e: animatediff_runtime::Error) -> String {
    use animatediff_runtime::Setting;
    e.describe(&|s| {
        match s {
            Setting::Ep => "--ep",
            Setting::Fallback => "--ep-fallback",
            Setting::OrtLibrary => "--ort-library",
            Setting::Frames => "--frames",
            Setting::Width => "--width",
            Setting::Height => "--height",
            Setting::Steps => "--steps",
            Setting::Guidance => "--guidance",
            Setting::Latents => "--latents-in",
            Setting::Spacing => "--timestep-spacing",
            Setting::Karras => "--karras",
            Setting::Eta => "--eta",
            Setting::ClipSkip => "--clip-skip",
            Setting::Context => "--context",
            Setting::ContextLength => "--context-length",
            Setting::ContextOverlap => "--context-overlap",
            Setting::Keyframes => "--prompt-at",
            other => return other.to_string(),
        }
        .into()
    })
}

/// `animate check`: returns whether every row passed.
fn check(a: CheckArgs) -> Result<bool, String> {
    use animatediff_runtime::{attention_fit, check};
    let artifact = Artifact::open(&a.model).map_err(with_flags)?;
    let mut rows = vec![check::verify_files(&artifact)];
    let graph_file = |graph: &str| artifact.manifest.graphs.get(graph).map(|g| g.file.clone()).unwrap_or_default();
    let options = |ep: Ep| RuntimeOptions { ep, ort_library: a.ort_library.clone(), trt_cache: a.trt_cache.clone(), ..Default::default() };
    let tolerance = a.tolerance.unwrap_or_else(|| check::default_tolerance(&artifact));
    let runtime = if a.verify { None } else { Some(Runtime::new(options(a.ep)).map_err(with_flags)?) };
    match (runtime, a.against) {
        (None, _) => {}
        (Some(runtime), Some(other)) => {
            let reference = Runtime::new(options(other)).map_err(with_flags)?;
            for case in check::small_inputs(check::SmallShapes::of(&artifact)) {
                let compared = format!("{} vs {}", a.ep, other);
                if let Some(reason) = [a.ep, other].into_iter().find_map(|ep| attention_fit::cannot_run(&artifact, ep, &case.graph)) {
                    rows.push(check::Row::skipped(&case.graph, &compared, reason));
                    continue;
                }
                let file = graph_file(&case.graph);
                let got = check::run(&runtime, &artifact.dir, &file, &case).map_err(with_flags)?;
                let want = check::run(&reference, &artifact.dir, &file, &case).map_err(with_flags)?;
                rows.push(check::compare(&case.graph, &compared, &got, &want, tolerance));
            }
        }
        (Some(runtime), None) => {
            let bundle = match &a.golden {
                Some(p) => p.clone(),
                None => match &artifact.manifest.golden {
                    Some(g) => artifact.dir.join(&g.file),
                    None => return Err(format!("{}: the artifact has no golden bundle (built with --no-golden); use --against or --golden", a.model.display())),
                },
            };
            for case in check::read_bundle(&bundle, &artifact).map_err(with_flags)? {
                if let Some(reason) = attention_fit::cannot_run(&artifact, a.ep, &case.graph) {
                    rows.push(check::Row::skipped(&case.graph, &format!("{} vs golden", a.ep), reason));
                    continue;
                }
                let file = graph_file(&case.graph);
                let got = check::run(&runtime, &artifact.dir, &file, &case).map_err(with_flags)?;
                let want = case.expected.clone().expect("bundle outputs");
                rows.push(check::compare(&case.graph, &format!("{} vs golden", a.ep), &got, &want, tolerance));
            }
        }
    }
    let pass = rows.iter().all(|r| r.pass);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "model": a.model, "pass": pass, "rows": rows })).unwrap());
    } else {
        println!("{:<13} {:<30} {:>13} {:>13} {:>10}  result", "graph", "compared", "max abs err", "max rel err", "tolerance");
        for r in &rows {
            println!(
                "{:<13} {:<30} {:>13.3e} {:>13.3e} {:>10.1e}  {}{}",
                r.graph,
                r.compared,
                r.max_abs_error,
                r.max_relative_error,
                r.tolerance,
                if r.skipped { "SKIP" } else if r.pass { "PASS" } else { "FAIL" },
                if r.detail.is_empty() { String::new() } else { format!("  ({})", r.detail) }
            );
        }
    }
    Ok(pass)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check(a)) => check(a).map(|pass| if pass { ExitCode::SUCCESS } else { ExitCode::FAILURE }),
        None => run(cli.args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("animate: error: {e}");
            ExitCode::FAILURE
        }
    }
}
