//! `build-graph`: base + personalised checkpoint + LoRAs + motion module → an artifact directory
//! (`text_encoder.onnx`, `unet.onnx` + `unet.onnx.data`, `vae_decoder.onnx`, `tokenizer.json`,
//! `manifest.json`). Written into a temporary sibling directory and renamed when complete, so an
//! interrupted build never leaves a half-written artifact at `--out`; what may be replaced there,
//! the lock and the cleanup of temporaries are [`crate::out_dir`]'s.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::json;

use animatediff_formats::{
    arch, ComponentKind, LoadOptions, Lora, LoraScaling, LoraSet, LoraSpec, ModelArch, MotionModule, MotionVersion,
    SdCheckpoint,
};
use animatediff_models::{MotionConfig, TextEncoder, Unet3d, UnetConfig, UnetShapes, VaeDecoder};
use onnx_writer::{external_data_path, AttentionForm, DataSet, ElemType, ExternalData, Graph, Reused, WeightStorage};

use crate::out_dir::{self, Claim, Notice};
use crate::rebuild::{self, UnetReuse};

/// The CLIP BPE tokenizer shipped with every artifact (see `crates/cli/assets/README.md`).
pub const CLIP_TOKENIZER_JSON: &[u8] = include_bytes!("../assets/clip_tokenizer.json");

/// No file of an artifact may reach protobuf's 2 GiB limit.
const MAX_FILE_BYTES: u64 = 2 << 30;

/// Version of the artifact layout and manifest; `animate` refuses other versions.
pub const ARTIFACT_VERSION: u32 = 1;

/// The manifest's `format` tag.
pub const ARTIFACT_FORMAT: &str = "animatediff-onnx artifact";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    Fp16,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            o => Err(format!("unknown precision `{o}`: expected fp32 or fp16")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
        })
    }
}

#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub base: Option<PathBuf>,
    pub personalized: Option<PathBuf>,
    pub loras: Vec<LoraSpec>,
    pub lora_scaling: LoraScaling,
    /// Apply a LoRA even when some of its keys match no weight (they are listed as warnings).
    pub lora_ignore_unmatched: bool,
    pub motion_module: PathBuf,
    pub motion_version: Option<MotionVersion>,
    pub arch: Option<PathBuf>,
    pub frames: Option<usize>,
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub precision: Precision,
    /// The VAE decoder's precision; fp32 unless asked (the SD VAE overflows in fp16, spec §7).
    pub vae_precision: Precision,
    pub out: PathBuf,
    /// The ONNX opset (raised to 23 when `attention` is `Sdpa`, which needs it).
    pub opset: i64,
    /// The ONNX form of the UNet's and VAE's attentions (CLIP's causal attention is always
    /// plain); see [`AttentionForm`].
    pub attention: AttentionForm,
    pub quiet: bool,
    /// Largest external-data file (default just under 2 GiB); more files are written beyond it.
    pub max_file_bytes: u64,
    /// Store a golden bundle (`golden.npz`: seeded small inputs and tract's outputs) so that
    /// `animate check` works anywhere without the source checkpoints.
    pub golden: bool,
    /// Re-use what the artifact already at `out` can give (input hashes of unchanged files; the
    /// UNet's stable weights when only LoRA multipliers changed); see [`crate::rebuild`].
    pub reuse: bool,
    /// Replace a directory at `out` that is not a complete artifact of ours: only the files its
    /// manifest lists are replaced, every other file stays (see [`crate::out_dir`]).
    pub force: bool,
    /// Told what happens at `out` beside the build: waiting for another build's lock, stale
    /// temporaries removed or left.
    pub on_notice: fn(&Notice),
}

impl BuildOptions {
    /// The defaults of the `build-graph` command line: no base, personalised model or LoRAs yet,
    /// official LoRA scaling, detected motion version, symbolic shapes, fp32, opset 17, files
    /// under 2 GiB, progress bar shown.
    pub fn new(motion_module: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            base: None,
            personalized: None,
            loras: Vec::new(),
            lora_scaling: LoraScaling::Official,
            lora_ignore_unmatched: false,
            motion_module: motion_module.into(),
            motion_version: None,
            arch: None,
            frames: None,
            height: None,
            width: None,
            precision: Precision::Fp32,
            vae_precision: Precision::Fp32,
            out: out.into(),
            opset: onnx_writer::DEFAULT_OPSET,
            attention: AttentionForm::default(),
            quiet: false,
            max_file_bytes: onnx_writer::MAX_EXTERNAL_FILE_BYTES,
            golden: true,
            reuse: true,
            force: false,
            on_notice: |_| {},
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Format(#[from] animatediff_formats::Error),
    #[error(transparent)]
    Build(#[from] animatediff_models::BuildError),
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Out(#[from] out_dir::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// What a finished build wrote.
#[derive(Debug)]
pub struct BuildReport {
    pub out: PathBuf,
    pub manifest: serde_json::Value,
    /// Warnings shown to the user (e.g. LoRA keys that matched nothing).
    pub warnings: Vec<String>,
    /// Bytes of UNet weights taken unchanged from the previous artifact at `out` (0 if none).
    pub reused_bytes: u64,
}

/// The scheduler the official code samples every SD1.5 motion module with (spec §8.1).
pub fn scheduler_config() -> serde_json::Value {
    json!({
        "type": "DDIM",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "linear",
        "steps_offset": 1,
        "clip_sample": false,
        "set_alpha_to_one": true,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "eta": 0.0
    })
}

/// SHA-256 of each file, computed once: one single-file checkpoint supplies up to three
/// components, and a multi-GB file should be read once, not per component. Input files are
/// hashed on a second thread while the graphs are written (`prefetch`), outputs two at a time
/// (`all`): hashing ~10 GB is a large part of a full-size build and needs no other work to wait.
#[derive(Default)]
struct Hashes {
    done: std::sync::Mutex<std::collections::BTreeMap<PathBuf, String>>,
    pending: std::sync::Mutex<Option<std::thread::JoinHandle<Vec<(PathBuf, std::io::Result<String>)>>>>,
}

impl Hashes {
    /// Starts hashing `files` in the background, except those whose hash is `known`.
    fn prefetch(files: Vec<PathBuf>, known: std::collections::BTreeMap<PathBuf, String>) -> Self {
        let todo: Vec<PathBuf> = files.into_iter().filter(|p| !known.contains_key(p)).collect();
        let handle = std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            todo.into_iter().filter(|p| seen.insert(p.clone())).map(|p| {
                let h = animatediff_runtime::sha256_file(&p);
                (p, h)
            }).collect()
        });
        Self { done: std::sync::Mutex::new(known), pending: std::sync::Mutex::new(Some(handle)) }
    }

    /// The hash of `path` if it is known already (without waiting for the background hashing).
    fn known(&self, path: &Path) -> Option<String> {
        self.done.lock().unwrap().get(path).cloned()
    }

    /// The hash of `path`, computed here if not known (without waiting for the background).
    fn of_now(&self, path: &Path) -> Result<String, Error> {
        if let Some(h) = self.known(path) {
            return Ok(h);
        }
        let h = animatediff_runtime::sha256_file(path).map_err(io(path))?;
        self.insert(path.to_path_buf(), h.clone());
        Ok(h)
    }

    fn insert(&self, path: PathBuf, sha256: String) {
        self.done.lock().unwrap().insert(path, sha256);
    }

    /// The hash of `path`, once the background hashing is done.
    fn of(&self, path: &Path) -> Result<String, Error> {
        if let Some(handle) = self.pending.lock().unwrap().take() {
            let results = handle.join().unwrap_or_default();
            let mut done = self.done.lock().unwrap();
            // a failed background read is retried below, in the foreground, for its error
            done.extend(results.into_iter().filter_map(|(p, h)| Some((p, h.ok()?))));
        }
        self.of_now(path)
    }

    /// Hashes of `files` (those not known yet computed two threads at a time), in order.
    fn all(&self, files: &[PathBuf]) -> Result<Vec<String>, Error> {
        let todo: Vec<&PathBuf> = files.iter().filter(|p| self.known(p).is_none()).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&p) = todo.get(i) else { break };
                    if let Ok(h) = animatediff_runtime::sha256_file(p) {
                        self.insert(p.clone(), h);
                    }
                });
            }
        });
        files.iter().map(|p| self.of(p)).collect()
    }

    fn entries(&self, files: &[PathBuf]) -> Result<Vec<serde_json::Value>, Error> {
        files.iter().map(|p| Ok(rebuild::input_entry(p, &self.of(p)?))).collect()
    }
}

fn dim_json(d: Option<usize>, name: &str) -> serde_json::Value {
    d.map(|v| json!(v)).unwrap_or_else(|| json!(name))
}

/// Runs the whole build.
pub fn build(opts: &BuildOptions) -> Result<BuildReport, Error> {
    let mut warnings = Vec::new();
    for (name, v) in [("--height", opts.height), ("--width", opts.width)] {
        if let Some(px) = v {
            if px == 0 || px % 8 != 0 {
                return Err(Error::Usage(format!("{name} {px} is not a positive multiple of 8 (the VAE's factor)")));
            }
        }
    }

    // Before any work: no input inside `--out`, the lock held, stale temporaries removed, and
    // what is at `--out` found replaceable.
    let inputs: Vec<&Path> = [&opts.base, &opts.personalized, &opts.arch]
        .into_iter()
        .flatten()
        .chain(opts.loras.iter().map(|l| &l.path))
        .chain([&opts.motion_module])
        .map(PathBuf::as_path)
        .collect();
    let claim = Claim::artifact(&opts.out, &inputs, opts.force, &opts.on_notice)?;

    // Model files: the personalised checkpoint replaces every component it has.
    let load = LoadOptions::default();
    let base = opts.base.as_ref().map(|p| SdCheckpoint::open(p, &load)).transpose()?;
    let personal = opts.personalized.as_ref().map(|p| SdCheckpoint::open(p, &load)).transpose()?;
    let mut unrecognized = Vec::new();
    for ck in base.iter().chain(personal.iter()) {
        if !ck.unrecognized.is_empty() {
            let msg = format!(
                "{}: {} keys match no known layout and are not used (first: `{}`)",
                ck.source.display(),
                ck.unrecognized.len(),
                ck.unrecognized[0]
            );
            unrecognized.push(msg.clone());
            warnings.push(msg);
        }
    }
    let model = match (personal, base) {
        (Some(p), Some(b)) => p.over(b),
        (Some(p), None) => p,
        (None, Some(b)) => b,
        (None, None) => return Err(Error::Usage("no model given: pass --base and/or --personalized".into())),
    };
    let missing: Vec<String> = [ComponentKind::Unet, ComponentKind::Vae, ComponentKind::TextEncoder]
        .into_iter()
        .filter(|k| model.component(*k).is_none())
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no {} in the given files; pass a --base model that has {}",
            model.source.display(),
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        )));
    }
    let (unet, vae, text) = (model.unet.as_ref().unwrap(), model.vae.as_ref().unwrap(), model.text_encoder.as_ref().unwrap());

    let motion = MotionModule::open(&opts.motion_module, opts.motion_version)?;

    // Architecture: from shapes, then diffusers configs, then arch.json.
    let mut a = ModelArch {
        unet: arch::infer_unet(unet)?,
        text_encoder: arch::infer_text_encoder(text)?,
        vae: arch::infer_vae(vae)?,
        motion_module: Default::default(),
    };
    arch::apply_diffusers_configs(&mut a, &model.configs);
    let arch_source = match &opts.arch {
        Some(p) => {
            a = arch::apply_overrides(&a, p)?;
            p.clone()
        }
        None => model.source.clone(),
    };
    a.validate(&arch_source)?;
    check_motion_sites(&motion, &a)?;
    if let Some(f) = opts.frames {
        if f == 0 || f > motion.max_frames() {
            return Err(Error::Usage(format!(
                "--frames {f}: the motion module {} accepts 1 to {} frames (its positional table)",
                opts.motion_module.display(),
                motion.max_frames()
            )));
        }
    }

    // Input hashes: known from the previous artifact's manifest for files whose size and time
    // are unchanged, the others computed in the background while the graphs are written.
    let previous = if opts.reuse { rebuild::Previous::open(&opts.out) } else { None };
    let component_files = |k: ComponentKind| model.component(k).map(|c| c.files()).unwrap_or_default();
    let mut inputs: Vec<PathBuf> =
        [ComponentKind::Unet, ComponentKind::Vae, ComponentKind::TextEncoder].into_iter().flat_map(component_files).collect();
    inputs.push(motion.source.clone());
    inputs.extend(opts.arch.iter().cloned());
    let hashes = Hashes::prefetch(inputs, previous.as_ref().map(|p| p.unchanged_inputs()).unwrap_or_default());

    // LoRAs, matched against the UNet, the text encoder and the motion module.
    let mut loras = Vec::new();
    let mut lora_json = Vec::new();
    for spec in &opts.loras {
        let lora = Lora::open(&spec.path)?;
        let r = lora.resolve(&[unet, text, &motion.weights])?;
        if !r.unmatched.is_empty() {
            let shown: Vec<&str> = r.unmatched.iter().take(5).map(String::as_str).collect();
            let msg = format!(
                "{}: {} of its keys match no weight of the model (UNet, text encoder, motion module): {}{}",
                spec.path.display(),
                r.unmatched.len(),
                shown.join(", "),
                if r.unmatched.len() > shown.len() { ", ..." } else { "" }
            );
            if !opts.lora_ignore_unmatched {
                return Err(Error::Usage(format!(
                    "{msg}. Is it a LoRA for another model (SD 2.x, SDXL)? Pass --lora-ignore-unmatched to apply the keys that do match"
                )));
            }
            warnings.push(format!("{msg} (not applied)"));
        }
        lora_json.push(rebuild::input_entry_with(
            &spec.path,
            &hashes.of_now(&spec.path)?,
            json!({
                "multiplier": json_f32(spec.multiplier),
                "format": format!("{:?}", lora.format),
                "modules": lora.len(),
                "matched": r.targets.len(),
                "unmatched_keys": r.unmatched,
            }),
        ));
        loras.push((lora, spec.multiplier));
    }
    let lora_set = if loras.is_empty() { None } else { Some(LoraSet::new(loras, opts.lora_scaling, &[unet, text, &motion.weights])?) };

    // Output goes to a temporary sibling, put in place when complete (removed on failure).
    let out = &opts.out;
    let staging = claim.stage()?;
    let tmp = staging.path();
    // The UNet's stable weights of the previous artifact, when only LoRA multipliers changed.
    let unet_reuse = previous.as_ref().and_then(|p| {
        let known = |f: &Path| hashes.known(f);
        let unet_shas: Option<Vec<_>> = component_files(ComponentKind::Unet).iter().map(|f| Some(json!({ "sha256": known(f)? }))).collect();
        let lora_shas: Option<Vec<_>> = opts.loras.iter().map(|l| Some(json!({ "sha256": known(&l.path)? }))).collect();
        let arch_sha = match &opts.arch {
            Some(p) => Some(json!({ "sha256": known(p)? })),
            None => None,
        };
        let key = rebuild::content_key(&json!({
            "artifact_version": ARTIFACT_VERSION,
            "tool": { "version": env!("CARGO_PKG_VERSION"), "executable": rebuild::executable_stamp() },
            "inputs": {
                "components": { "unet": unet_shas? },
                "motion_module": { "sha256": known(&motion.source)?, "version": motion.version.to_string() },
                "loras": lora_shas?,
                "lora_scaling": opts.lora_scaling.to_string(),
                "arch_json": arch_sha,
            },
            "architecture": a,
            "precision": opts.precision.to_string(),
        }));
        p.unet_reuse(&key)
    });
    let (manifest, reused_bytes) =
        write_artifact(opts, tmp, &a, &model, &motion, lora_set.as_ref(), lora_json, unrecognized, &arch_source, &hashes, unet_reuse)?;
    claim.commit(staging)?;
    Ok(BuildReport { out: out.clone(), manifest, warnings, reused_bytes })
}

fn json_f32(v: f32) -> serde_json::Value {
    // f32 → shortest decimal, so 0.8 stays 0.8
    json!(format!("{v}").parse::<f64>().unwrap_or(v as f64))
}

/// The motion module's sites and widths must be the UNet's.
fn check_motion_sites(mm: &MotionModule, a: &ModelArch) -> Result<(), Error> {
    let ch = &a.unet.block_out_channels;
    let n = ch.len();
    let mut expected = Vec::new();
    for (i, &c) in ch.iter().enumerate() {
        for j in 0..a.unet.layers_per_block {
            expected.push((format!("down_blocks.{i}.motion_modules.{j}"), c));
        }
    }
    if mm.has_mid_block {
        expected.push(("mid_block.motion_modules.0".into(), ch[n - 1]));
    }
    for i in 0..n {
        for j in 0..=a.unet.layers_per_block {
            expected.push((format!("up_blocks.{i}.motion_modules.{j}"), ch[n - 1 - i]));
        }
    }
    let mut found = mm.sites.clone();
    found.sort();
    expected.sort();
    if found != expected {
        let first = expected.iter().zip(&found).find(|(e, f)| e != f).map(|(e, f)| format!("expected {e:?}, found {f:?}"));
        return Err(Error::Format(animatediff_formats::Error::MotionModule {
            path: mm.source.clone(),
            reason: format!(
                "does not fit the UNet (widths {ch:?}, {} layers per block): {} module sites expected, {} found{}",
                a.unet.layers_per_block,
                expected.len(),
                found.len(),
                first.map(|s| format!("; {s}")).unwrap_or_default()
            ),
        }));
    }
    Ok(())
}

struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(quiet: bool, total: u64) -> Self {
        if quiet {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg:<14} [{bar:40}] {pos}/{len} tensors {binary_bytes_per_sec}")
                .unwrap()
                .progress_chars("=> "),
        );
        Progress(Some(bar))
    }

    fn attach(&self, g: &mut Graph, what: &'static str) {
        if let Some(bar) = &self.0 {
            bar.set_message(what);
            let bar = bar.clone();
            g.on_weight(move |_, _| bar.inc(1));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_artifact(
    opts: &BuildOptions,
    dir: &Path,
    a: &ModelArch,
    model: &SdCheckpoint,
    motion: &MotionModule,
    loras: Option<&LoraSet>,
    lora_json: Vec<serde_json::Value>,
    unrecognized: Vec<String>,
    arch_source: &Path,
    hashes: &Hashes,
    unet_reuse: Option<UnetReuse>,
) -> Result<(serde_json::Value, u64), Error> {
    let (unet, vae, text) = (model.unet.as_ref().unwrap(), model.vae.as_ref().unwrap(), model.text_encoder.as_ref().unwrap());
    let producer = concat!("build-graph ", env!("CARGO_PKG_VERSION"));
    let total = (unet.len() + motion.weights.len() + text.len() + vae.names().filter(|n| !n.starts_with("encoder.")).count()) as u64;
    let progress = Progress::new(opts.quiet, total);
    let elem = |p: Precision| match p {
        Precision::Fp32 => ElemType::F32,
        Precision::Fp16 => ElemType::F16,
    };
    let weight_type = elem(opts.precision);
    let opset = graph_opset(opts);
    let graph = |name: &str, storage: WeightStorage, elem: ElemType| {
        let mut g = Graph::new(name, opset, storage);
        g.weight_type = elem;
        g.act = elem;
        g.attention_form = opts.attention;
        g
    };

    // text encoder
    let te_path = dir.join("text_encoder.onnx");
    let mut g = graph("text_encoder", WeightStorage::Inline, weight_type);
    progress.attach(&mut g, "text encoder");
    let te = TextEncoder::new(&mut g, a.text_encoder.clone(), text, loras)?;
    te.build(&mut g, None);
    g.finish(&te_path, producer, &[]).map_err(io(&te_path))?;

    // UNet with motion modules; weights as external data
    let unet_path = dir.join("unet.onnx");
    let data_path = external_data_path(&unet_path);
    let lora_data_path = dir.join("unet.onnx.lora.data");
    let (storage, reused_bytes) = match unet_reuse.and_then(|r| reuse_unet_files(r, dir, hashes)) {
        Some((reused, bytes)) => (ExternalData::reusing(opts.max_file_bytes, reused), bytes),
        None => (ExternalData::new(&data_path, opts.max_file_bytes).map_err(io(&data_path))?, 0),
    };
    let storage = WeightStorage::External(storage.with_volatile(&lora_data_path));
    let mut g = graph("unet", storage, weight_type);
    progress.attach(&mut g, "UNet");
    let cfg = UnetConfig {
        arch: a.unet.clone(),
        motion_version: motion.version,
        motion: MotionConfig {
            heads: a.motion_module.num_attention_heads,
            groups: a.motion_module.norm_num_groups,
            max_frames: motion.max_frames(),
        },
        motion_mid_block: motion.has_mid_block,
    };
    let net = Unet3d::new(&mut g, cfg, unet, loras, &motion.weights, loras)?;
    let lat = |px: Option<usize>| px.map(|p| p / 8);
    let shapes = UnetShapes { batch: None, frames: opts.frames, height: lat(opts.height), width: lat(opts.width) };
    net.build(&mut g, &shapes);
    let unet_data_files = g.external_files();
    let unet_lora_files = g.external_files_in(DataSet::Volatile);
    g.finish(&unet_path, producer, &[]).map_err(io(&unet_path))?;

    // VAE decoder
    let vae_path = dir.join("vae_decoder.onnx");
    let mut g = graph("vae_decoder", WeightStorage::Inline, elem(opts.vae_precision));
    progress.attach(&mut g, "VAE decoder");
    let dec = VaeDecoder::new(&mut g, a.vae.clone(), vae)?;
    dec.build(&mut g, lat(opts.height), lat(opts.width));
    g.finish(&vae_path, producer, &[]).map_err(io(&vae_path))?;
    progress.finish();

    let tok_path = dir.join("tokenizer.json");
    std::fs::write(&tok_path, CLIP_TOKENIZER_JSON).map_err(io(&tok_path))?;

    // Golden bundle: small seeded inputs through every graph with tract.
    let golden = if opts.golden {
        let shapes = animatediff_runtime::check::SmallShapes::new(
            a.unet.in_channels,
            a.text_encoder.hidden_size,
            motion.max_frames(),
            opts.frames,
            lat(opts.height).zip(lat(opts.width)),
        );
        let runtime = animatediff_runtime::Runtime::new(animatediff_runtime::RuntimeOptions::default())
            .map_err(|e| Error::Usage(e.to_string()))?;
        let mut cases = animatediff_runtime::check::small_inputs(shapes);
        for case in &mut cases {
            let file = format!("{}.onnx", case.graph);
            let out = animatediff_runtime::check::run(&runtime, dir, &file, case)
                .map_err(|e| Error::Usage(format!("computing the golden bundle: {e}")))?;
            case.expected = Some(out);
        }
        let path = dir.join("golden.npz");
        animatediff_runtime::check::write_bundle(&path, &cases).map_err(|e| Error::Usage(e.to_string()))?;
        Some(json!({
            "file": "golden.npz",
            "runtime": "tract",
            "frames": shapes.frames,
            "latent_height": shapes.latent_hw.0,
            "latent_width": shapes.latent_hw.1,
            "arrays": "<graph>.<input or output name>",
        }))
    } else {
        None
    };

    // Manifest
    let h = lat(opts.height);
    let w = lat(opts.width);
    let d = a.text_encoder.hidden_size;
    let graphs = json!({
        "text_encoder": {
            "file": "text_encoder.onnx",
            "inputs": [{ "name": "input_ids", "dtype": "int64", "shape": ["batch", 77] }],
            "outputs": [{ "name": "last_hidden_state", "dtype": "float32", "shape": ["batch", 77, d] }],
        },
        "unet": {
            "file": "unet.onnx",
            "external_data": unet_data_files,
            "lora_dependent_data": unet_lora_files,
            "inputs": [
                { "name": "sample", "dtype": "float32", "shape": ["batch", a.unet.in_channels, dim_json(opts.frames, "frames"), dim_json(h, "height"), dim_json(w, "width")] },
                { "name": "timestep", "dtype": "float32", "shape": ["batch"] },
                { "name": "encoder_hidden_states", "dtype": "float32", "shape": ["batch", 77, d] },
            ],
            "outputs": [{ "name": "noise_pred", "dtype": "float32", "shape": ["batch", a.unet.out_channels, dim_json(opts.frames, "frames"), dim_json(h, "height"), dim_json(w, "width")] }],
        },
        "vae_decoder": {
            "file": "vae_decoder.onnx",
            "inputs": [{ "name": "latent_sample", "dtype": "float32", "shape": ["N", a.vae.latent_channels, dim_json(h, "h"), dim_json(w, "w")] }],
            "outputs": [{ "name": "sample", "dtype": "float32", "shape": ["N", 3, dim_json(h.map(|x| 8 * x), "H"), dim_json(w.map(|x| 8 * x), "W")] }],
        },
    });
    let mut files = serde_json::Map::new();
    let mut written = ["text_encoder.onnx", "unet.onnx", "vae_decoder.onnx", "tokenizer.json"].map(String::from).to_vec();
    if golden.is_some() {
        written.push("golden.npz".into());
    }
    written.extend(unet_data_files.iter().cloned());
    let paths: Vec<PathBuf> = written.iter().map(|f| dir.join(f)).collect();
    for p in &paths {
        let size = std::fs::metadata(p).map_err(io(p))?.len();
        if size > MAX_FILE_BYTES {
            return Err(Error::Usage(format!("{}: {size} bytes, over the 2 GB limit of a single file", p.display())));
        }
    }
    for (f, h) in written.iter().zip(hashes.all(&paths)?) {
        files.insert(f.clone(), json!(h));
    }
    let component_files = |k: ComponentKind| -> Result<serde_json::Value, Error> {
        Ok(json!(hashes.entries(&model.component(k).map(|c| c.files()).unwrap_or_default())?))
    };
    let manifest = json!({
        "format": ARTIFACT_FORMAT,
        "artifact_version": ARTIFACT_VERSION,
        "tool": { "name": "build-graph", "version": env!("CARGO_PKG_VERSION"), "executable": rebuild::executable_stamp() },
        "inputs": {
            "base": opts.base,
            "personalized": opts.personalized,
            "components": {
                "unet": component_files(ComponentKind::Unet)?,
                "vae": component_files(ComponentKind::Vae)?,
                "text_encoder": component_files(ComponentKind::TextEncoder)?,
            },
            "motion_module": rebuild::input_entry_with(&motion.source, &hashes.of(&motion.source)?, json!({
                "version": motion.version.to_string(),
                "detected_version": motion.detected.map(|v| v.to_string()),
                "layout": format!("{:?}", motion.layout),
                "mid_block": motion.has_mid_block,
                "max_frames": motion.max_frames(),
            })),
            "loras": lora_json,
            "lora_scaling": opts.lora_scaling.to_string(),
            "arch_json": opts.arch.as_ref().map(|p| -> Result<_, Error> { Ok(rebuild::input_entry(p, &hashes.of(p)?)) }).transpose()?,
            "unrecognized_keys": unrecognized,
        },
        "architecture": a,
        "architecture_source": arch_source,
        "motion_version": motion.version.to_string(),
        "resnet_groupnorm": if motion.version.per_frame_resnet_groupnorm() { "per_frame" } else { "across_frames" },
        "max_frames": motion.max_frames(),
        "scheduler": scheduler_config(),
        "precision": opts.precision.to_string(),
        "vae_precision": opts.vae_precision.to_string(),
        "opset": graph_opset(opts),
        "attention": opts.attention.to_string(),
        "graphs": graphs,
        "golden": golden,
        "tokenizer": { "file": "tokenizer.json", "pad_token_id": 49407, "bos_token_id": 49406, "eos_token_id": 49407, "max_length": 77 },
        "files": files,
    });
    let mpath = dir.join("manifest.json");
    std::fs::write(&mpath, serde_json::to_string_pretty(&manifest).unwrap() + "\n").map_err(io(&mpath))?;
    Ok((manifest, reused_bytes))
}

/// The opset the graphs are written at: `--opset`, raised to the first one with the standard
/// `Attention` operator when the attention form needs it.
fn graph_opset(opts: &BuildOptions) -> i64 {
    match opts.attention {
        AttentionForm::Sdpa => opts.opset.max(onnx_writer::SDPA_MIN_OPSET),
        AttentionForm::Mha | AttentionForm::Plain => opts.opset,
    }
}

/// Hard-links the previous artifact's stable UNet files into `dir` and reads where its weights
/// are; their hashes are taken from its manifest. `None` (and nothing left in `dir`) when any
/// step fails: the build then writes everything.
fn reuse_unet_files(r: UnetReuse, dir: &Path, hashes: &Hashes) -> Option<(Reused, u64)> {
    let names: Vec<String> = r.stable_files.iter().map(|(f, _)| f.clone()).collect();
    let reused = Reused::from_model(&r.dir.join("unet.onnx"), &names).ok().filter(|x| !x.is_empty())?;
    let mut bytes = 0;
    for (i, f) in names.iter().enumerate() {
        let linked = std::fs::hard_link(r.dir.join(f), dir.join(f)).and_then(|_| std::fs::metadata(dir.join(f)));
        match linked {
            Ok(m) => bytes += m.len(),
            Err(_) => {
                for g in &names[..i] {
                    let _ = std::fs::remove_file(dir.join(g));
                }
                return None;
            }
        }
    }
    for (f, sha) in r.stable_files {
        hashes.insert(dir.join(f), sha);
    }
    Some((reused, bytes))
}
