//! One trait for running a graph, two runtimes behind it: tract (pure Rust, the default, nothing
//! to install) and ONNX Runtime through `ort` with `load-dynamic` (the shared library from the
//! `onnxruntime` / `onnxruntime-gpu` wheel) on its CPU, CUDA, TensorRT or DirectML execution
//! provider. An unavailable provider is an error listing those that are; falling back to another
//! happens only when asked, and is reported.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// A dense tensor crossing the runtime boundary.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    I64 { shape: Vec<usize>, data: Vec<i64> },
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32 { shape, .. } | Tensor::I64 { shape, .. } => shape,
        }
    }
}

/// A loaded graph.
pub trait GraphSession {
    /// Runs with inputs in the graph's declared order; returns the first output (f32).
    fn run(&mut self, inputs: &[Tensor]) -> Result<(Vec<usize>, Vec<f32>)>;

    /// Runs once timing every operation of the optimised graph, in execution order (tract only;
    /// `None` where the runtime has no per-operation hook). For benchmarks, not the product path.
    fn profile(&mut self, _inputs: &[Tensor]) -> Result<Option<Vec<OpTiming>>> {
        Ok(None)
    }
}

/// One operation's wall time in a profiled run.
#[derive(Clone, Debug)]
pub struct OpTiming {
    pub node: String,
    pub op: String,
    /// The operation's own description (tract's `info`), e.g. a convolution's geometry.
    pub info: String,
    pub input_shapes: Vec<Vec<usize>>,
    pub seconds: f64,
    /// Bytes of activations alive once the operation has run, as the runtime's plan frees them
    /// (tract: every node output not yet past its last reader, constants excluded); 0 where
    /// unknown.
    pub live_bytes: u64,
    /// At the operation where `live_bytes` peaks (and only there): the activations alive, largest
    /// first, as (producing node, bytes).
    pub alive_at_peak: Vec<(String, u64)>,
}

/// Where a graph runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ep {
    Tract,
    Cpu,
    Cuda,
    TensorRt,
    DirectMl,
}

impl Ep {
    pub const ALL: [Ep; 5] = [Ep::Tract, Ep::Cpu, Ep::Cuda, Ep::TensorRt, Ep::DirectMl];
}

impl fmt::Display for Ep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ep::Tract => "tract",
            Ep::Cpu => "cpu",
            Ep::Cuda => "cuda",
            Ep::TensorRt => "tensorrt",
            Ep::DirectMl => "directml",
        })
    }
}

impl FromStr for Ep {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ep::ALL
            .into_iter()
            .find(|e| e.to_string() == s.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown execution provider `{s}`: expected tract, cpu, cuda, tensorrt or directml"))
    }
}

#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    pub ep: Ep,
    /// Fall back (tensorrt → cuda → cpu, anything → cpu → tract) when the provider is unavailable.
    pub fallback: bool,
    /// ONNX Runtime library; else `ORT_DYLIB_PATH`, else `.ort/` beside the working directory.
    pub ort_library: Option<PathBuf>,
    /// TensorRT engine cache directory.
    pub trt_cache: Option<PathBuf>,
    /// ONNX Runtime CPU provider's memory arena (`ANIMATEDIFF_ORT_ARENA=on|off` overrides `Auto`).
    pub cpu_arena: CpuArena,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self { ep: Ep::Tract, fallback: false, ort_library: None, trt_cache: None, cpu_arena: CpuArena::Auto }
    }
}

/// Whether ONNX Runtime's CPU provider keeps its memory arena.
///
/// The arena re-uses activation memory from run to run: without it every large activation is
/// mapped and zero-filled anew (the full-size UNet at 8×8 latents: 1.74 s with it, 2.33 s without;
/// at 64×64 117.9 s against 149.8 s). But each session keeps its arena's high-water mark for its
/// lifetime, rounded up to powers of two: at 512×512 × 16 frames the UNet's and the VAE decoder's
/// arenas together held `animate` at 13.4 GB instead of 9.2 GB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuArena {
    /// On for graphs whose spatial inputs are under [`ARENA_MAX_LATENT_PIXELS`] latent pixels
    /// (below 256×256 images), off from there up.
    #[default]
    Auto,
    On,
    Off,
}

/// [`CpuArena::Auto`] turns the arena off for inputs with at least this many latent pixels (the
/// last two axes of a rank ≥ 4 input: 32×32 latents, 256×256 pixels).
pub const ARENA_MAX_LATENT_PIXELS: usize = 32 * 32;

impl CpuArena {
    /// The setting for a graph with these input shapes (the environment first).
    fn enabled(self, shapes: &[(Vec<usize>, bool)]) -> bool {
        let choice = match std::env::var("ANIMATEDIFF_ORT_ARENA").as_deref() {
            Ok("on") => CpuArena::On,
            Ok("off") => CpuArena::Off,
            _ => self,
        };
        match choice {
            CpuArena::On => true,
            CpuArena::Off => false,
            CpuArena::Auto => {
                shapes.iter().filter(|(s, _)| s.len() >= 4).all(|(s, _)| s[s.len() - 2] * s[s.len() - 1] < ARENA_MAX_LATENT_PIXELS)
            }
        }
    }
}

/// Loads graphs on the chosen provider; remembers what was actually used.
pub struct Runtime {
    pub options: RuntimeOptions,
    /// The provider in use (differs from the request only after an allowed fallback).
    pub ep: Ep,
    /// Fallbacks that happened, for the user.
    pub notes: Vec<String>,
}

fn ort_library(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(p));
    }
    let mut dirs = vec![PathBuf::from(".ort")];
    if let Ok(exe) = std::env::current_exe() {
        for a in exe.ancestors().skip(1).take(4) {
            dirs.push(a.join(".ort"));
        }
    }
    for d in dirs {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("libonnxruntime.so.") || n == "libonnxruntime.dylib" || n == "onnxruntime.dll" {
                    return Ok(e.path());
                }
            }
        }
    }
    Err(Error::ProviderUnavailable {
        requested: "ONNX Runtime".into(),
        reason: "no ONNX Runtime shared library found".into(),
        available: "tract".into(),
        hint: ". Run tools/setup.sh (installs it into .ort/), set ORT_DYLIB_PATH, or pass --ort-library; `--ep tract` needs nothing"
            .into(),
    })
}

static ORT_ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// The process's ONNX Runtime environment (ONNX Runtime allows one per process), created on first
/// use from `library`, `ORT_DYLIB_PATH` or `.ort/`. Anything else in the process that uses `ort`
/// must go through this.
pub fn ort_environment(library: Option<&Path>) -> Result<&'static ort::environment::Environment> {
    ort_env(library)
}

fn ort_env(library: Option<&Path>) -> Result<&'static ort::environment::Environment> {
    let env = ORT_ENV.get_or_init(|| {
        let lib = ort_library(library).map_err(|e| e.to_string())?;
        if !lib.is_file() {
            return Err(format!("{}: no such file", lib.display()));
        }
        let builder = ort::init_from(&lib).map_err(|e| format!("loading {}: {e}", lib.display()))?;
        builder.build().map_err(|e| format!("starting ONNX Runtime from {}: {e}", lib.display()))
    });
    env.as_ref().map_err(|reason| Error::ProviderUnavailable {
        requested: "ONNX Runtime".into(),
        reason: reason.clone(),
        available: "tract".into(),
        hint: ". Run tools/setup.sh or set ORT_DYLIB_PATH; `--ep tract` needs nothing".into(),
    })
}

/// Providers usable here: tract always; ONNX Runtime's when its library loads and lists them.
pub fn available(options: &RuntimeOptions) -> Vec<Ep> {
    use ort::ep::ExecutionProvider;
    let mut v = vec![Ep::Tract];
    if ort_env(options.ort_library.as_deref()).is_ok() {
        v.push(Ep::Cpu);
        if ort::ep::CUDA::is_available().unwrap_or(false) {
            v.push(Ep::Cuda);
        }
        if ort::ep::TensorRT::is_available().unwrap_or(false) {
            v.push(Ep::TensorRt);
        }
        if ort::ep::DirectML::is_available().unwrap_or(false) {
            v.push(Ep::DirectMl);
        }
    }
    v
}

impl Runtime {
    /// Checks the provider; with `fallback`, picks the next one that works and records it.
    pub fn new(options: RuntimeOptions) -> Result<Self> {
        // tract needs nothing: ONNX Runtime is not touched unless one of its providers is asked for
        if options.ep == Ep::Tract {
            return Ok(Self { ep: Ep::Tract, options, notes: Vec::new() });
        }
        let avail = available(&options);
        let list = avail.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ");
        if avail.contains(&options.ep) {
            return Ok(Self { ep: options.ep, options, notes: Vec::new() });
        }
        let reason = match options.ep {
            Ep::Tract => unreachable!("tract is always available"),
            Ep::Cpu => ort_env(options.ort_library.as_deref()).err().map(|e| e.to_string()).unwrap_or_default(),
            other => format!("the ONNX Runtime library in use was not built with the {other} provider (CUDA/TensorRT need the onnxruntime-gpu wheel with CUDA 13, cuDNN 9 and TensorRT 10 libraries; DirectML needs Windows)"),
        };
        if !options.fallback {
            return Err(Error::ProviderUnavailable {
                requested: options.ep.to_string(),
                reason,
                available: list,
                hint: ". Choose one of those with --ep, or pass --ep-fallback to fall back automatically".into(),
            });
        }
        let order: &[Ep] = match options.ep {
            Ep::TensorRt => &[Ep::Cuda, Ep::Cpu, Ep::Tract],
            Ep::Cuda | Ep::DirectMl => &[Ep::Cpu, Ep::Tract],
            _ => &[Ep::Tract],
        };
        let ep = *order.iter().find(|e| avail.contains(e)).unwrap_or(&Ep::Tract);
        let note = format!("execution provider {} is not available ({reason}); falling back to {ep}", options.ep);
        Ok(Self { ep, options, notes: vec![note] })
    }

    /// Loads `path`; tract needs the input shapes up front (`shapes`, in input order). Sets glibc's
    /// heap thresholds for loading, then for running (see `heap`).
    pub fn load(&self, path: &Path, shapes: &[(Vec<usize>, bool)]) -> Result<Box<dyn GraphSession>> {
        let _loading = crate::heap::Loading::begin();
        match self.ep {
            Ep::Tract => Ok(Box::new(TractSession::load(path, shapes)?)),
            ep => Ok(Box::new(OrtSession::load(path, ep, &self.options, self.options.cpu_arena.enabled(shapes))?)),
        }
    }
}

struct TractSession {
    plan: std::sync::Arc<tract_onnx::prelude::TypedSimplePlan>,
    name: String,
}

/// tract's thread pool, shared by every tract session of the process: one thread per core
/// (`ANIMATEDIFF_THREADS` overrides). tract splits matrix products by output panels and
/// elementwise kernels by blocks, so results are bit-identical at any thread count.
fn tract_executor() -> tract_linalg::multithread::Executor {
    static POOL: OnceLock<tract_linalg::multithread::Executor> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::env::var("ANIMATEDIFF_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        if n > 1 {
            tract_linalg::multithread::Executor::multithread_with_name(n, "animatediff-tract")
        } else {
            tract_linalg::multithread::Executor::SingleThread
        }
    })
    .clone()
}

fn tract_error(graph: &str, e: tract_onnx::prelude::TractError) -> Error {
    Error::Runtime { runtime: "tract", graph: graph.to_owned(), reason: format!("{e:#}") }
}

/// The graph at `path` as tract's typed model for the given input shapes (`shapes`: per input, its
/// shape and whether it is i64, else f32), decluttered: what [`crate::tract_rewrite`] rewrites
/// before a tract session optimises it.
pub fn tract_decluttered(path: &Path, shapes: &[(Vec<usize>, bool)]) -> Result<tract_onnx::prelude::TypedModel> {
    use tract_onnx::prelude::*;
    let name = path.display().to_string();
    let err = |e: TractError| tract_error(&name, e);
    let mut model = tract_onnx::onnx().model_for_path(path).map_err(err)?;
    for (i, (shape, is_i64)) in shapes.iter().enumerate() {
        let fact: InferenceFact = if *is_i64 { i64::fact(shape).into() } else { f32::fact(shape).into() };
        model.set_input_fact(i, fact).map_err(err)?;
    }
    model.into_typed().and_then(|m| m.into_decluttered()).map_err(err)
}

impl TractSession {
    fn load(path: &Path, shapes: &[(Vec<usize>, bool)]) -> Result<Self> {
        use tract_onnx::prelude::*;
        let name = path.display().to_string();
        let err = |e: TractError| tract_error(&name, e);
        let mut typed = tract_decluttered(path, shapes)?;
        // `ANIMATEDIFF_TRACT_REWRITES=0` leaves the model as tract declutters it (for A/B runs)
        if std::env::var("ANIMATEDIFF_TRACT_REWRITES").map_or(true, |v| v != "0") {
            crate::tract_rewrite::apply(&mut typed).map_err(err)?;
        }
        let plan = typed.into_optimized().and_then(|m| m.into_runnable()).map_err(err)?;
        Ok(Self { plan, name })
    }

    fn error(&self, e: tract_onnx::prelude::TractError) -> Error {
        tract_error(&self.name, e)
    }

    /// The plan's activation memory, step by step: per node, the bytes of node outputs alive once
    /// it has run (an output lives from its node until the plan flushes it after its last reader;
    /// sizes from the outputs' facts, which the fixed input shapes make concrete); the node where
    /// that peaks, and what is alive there.
    #[allow(clippy::type_complexity)]
    fn liveness(&self) -> (std::collections::HashMap<usize, u64>, Option<usize>, Vec<(String, u64)>) {
        use tract_onnx::tract_core::internal::DimLike as _;
        use tract_onnx::tract_core::ops::konst::Const;
        let model = self.plan.model();
        let order = self.plan.order_without_consts();
        let outputs = model.output_outlets().map(|o| o.to_vec()).unwrap_or_default();
        let flush = tract_onnx::tract_core::model::order::build_flush_list(model, order, &outputs, |n| !n.op_is::<Const>());
        // a lazy im2col's output is a recipe for gathering the input, not a buffer
        let bytes = |id: usize| -> u64 {
            let node = &model.nodes()[id];
            if node.op().name() == "LazyIm2col" {
                return 0;
            }
            node.outputs.iter().map(|o| o.fact.mem_size().to_usize().unwrap_or(0) as u64).sum()
        };
        let mut alive: std::collections::HashMap<usize, u64> = Default::default();
        let (mut live, mut total, mut peak, mut peak_step) = (std::collections::HashMap::new(), 0u64, 0u64, None);
        let mut peak_alive = std::collections::HashMap::new();
        for (step, &id) in order.iter().enumerate() {
            if !model.nodes()[id].op_is::<Const>() {
                let b = bytes(id);
                alive.insert(id, b);
                total += b;
            }
            if total > peak {
                peak = total;
                peak_step = Some(id);
                peak_alive = alive.clone();
            }
            live.insert(id, total);
            for &n in flush.get(step).map(|f| f.as_slice()).unwrap_or(&[]) {
                total -= alive.remove(&n).unwrap_or(0);
            }
        }
        let mut alive_at_peak: Vec<(String, u64)> = peak_alive.into_iter().map(|(n, b)| (model.nodes()[n].name.clone(), b)).collect();
        alive_at_peak.sort_by_key(|a| std::cmp::Reverse(a.1));
        (live, peak_step, alive_at_peak)
    }

    fn values(&self, inputs: &[Tensor]) -> Result<tract_onnx::prelude::TVec<tract_onnx::prelude::TValue>> {
        use tract_onnx::prelude::*;
        inputs
            .iter()
            .map(|t| match t {
                self::Tensor::F32 { shape, data } => tract_onnx::prelude::Tensor::from_shape(shape, data).map(Into::into),
                self::Tensor::I64 { shape, data } => tract_onnx::prelude::Tensor::from_shape(shape, data).map(Into::into),
            })
            .collect::<TractResult<_>>()
            .map_err(|e| self.error(e))
    }
}

impl GraphSession for TractSession {
    fn profile(&mut self, inputs: &[Tensor]) -> Result<Option<Vec<OpTiming>>> {
        use tract_onnx::prelude::*;
        let values = self.values(inputs)?;
        let (live, peak_step, alive_at_peak) = self.liveness();
        let mut timings = Vec::new();
        let mut state = tract_onnx::tract_core::plan::SimpleState::new(&self.plan).map_err(|e| self.error(e))?;
        tract_linalg::multithread::multithread_tract_scope(tract_executor(), || {
            state.run_plan_with_eval(values, |ctx, op_state, node, inputs| {
                let input_shapes = inputs.iter().map(|v| v.shape().to_vec()).collect();
                let t = std::time::Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                timings.push(OpTiming {
                    node: node.name.clone(),
                    op: node.op().name().into_owned(),
                    info: node.op().info().map(|v| v.join("; ")).unwrap_or_default(),
                    input_shapes,
                    seconds: t.elapsed().as_secs_f64(),
                    live_bytes: live.get(&node.id).copied().unwrap_or(0),
                    alive_at_peak: if Some(node.id) == peak_step { alive_at_peak.clone() } else { Vec::new() },
                });
                out
            })
        })
        .map_err(|e| self.error(e))?;
        Ok(Some(timings))
    }

    fn run(&mut self, inputs: &[Tensor]) -> Result<(Vec<usize>, Vec<f32>)> {
        let values = self.values(inputs)?;
        let out = tract_linalg::multithread::multithread_tract_scope(tract_executor(), || self.plan.run(values))
            .map_err(|e| self.error(e))?;
        let view = out[0].to_plain_array_view::<f32>().map_err(|e| self.error(e))?;
        Ok((view.shape().to_vec(), view.iter().copied().collect()))
    }
}

struct OrtSession {
    session: ort::session::Session,
    inputs: Vec<String>,
    name: String,
}

impl OrtSession {
    fn load(path: &Path, ep: Ep, options: &RuntimeOptions, cpu_arena: bool) -> Result<Self> {
        let env = ort_env(options.ort_library.as_deref())?;
        let name = path.display().to_string();
        let err = |e: ort::Error| Error::Runtime { runtime: "ONNX Runtime", graph: name.clone(), reason: e.to_string() };
        let mut builder = ort::session::Session::builder(env).map_err(err)?;
        let provider: Option<ort::ep::ExecutionProviderDispatch> = match ep {
            Ep::Cuda => Some(ort::ep::CUDA::default().build().error_on_failure()),
            Ep::TensorRt => {
                let mut trt = ort::ep::TensorRT::default();
                if let Some(dir) = &options.trt_cache {
                    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
                    trt = trt.with_engine_cache(true).with_engine_cache_path(dir.display());
                }
                Some(trt.build().error_on_failure())
            }
            Ep::DirectMl => Some(ort::ep::DirectML::default().build().error_on_failure()),
            // Without its arena, ONNX Runtime's CPU provider returns each activation to the heap
            // (large blocks are unmapped, see `heap`) instead of keeping every session's high-water
            // mark (see `CpuArena`)
            Ep::Cpu => Some(ort::ep::CPU::default().with_arena_allocator(cpu_arena).build().error_on_failure()),
            Ep::Tract => None,
        };
        if let Some(p) = provider {
            builder = builder.with_execution_providers([p]).map_err(|e| Error::ProviderUnavailable {
                requested: ep.to_string(),
                reason: e.to_string(),
                available: available(options).iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
                hint: String::new(),
            })?;
        }
        let session = builder.commit_from_file(path).map_err(err)?;
        let inputs = session.inputs().iter().map(|i| i.name().to_owned()).collect();
        Ok(Self { session, inputs, name })
    }
}

impl GraphSession for OrtSession {
    fn run(&mut self, inputs: &[Tensor]) -> Result<(Vec<usize>, Vec<f32>)> {
        let name = self.name.clone();
        let err = |e: ort::Error| Error::Runtime { runtime: "ONNX Runtime", graph: name.clone(), reason: e.to_string() };
        let mut values: Vec<(String, ort::session::SessionInputValue)> = Vec::new();
        for (n, t) in self.inputs.iter().zip(inputs) {
            let v: ort::session::SessionInputValue = match t {
                Tensor::F32 { shape, data } => ort::value::Tensor::from_array((shape.clone(), data.clone())).map_err(err)?.into(),
                Tensor::I64 { shape, data } => ort::value::Tensor::from_array((shape.clone(), data.clone())).map_err(err)?.into(),
            };
            values.push((n.clone(), v));
        }
        let out = self.session.run(values).map_err(err)?;
        let (shape, data) = out[0].try_extract_tensor::<f32>().map_err(err)?;
        Ok((shape.iter().map(|&d| d as usize).collect(), data.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_arena_is_on_for_small_sizes_and_off_from_256_pixels_up() {
        if std::env::var_os("ANIMATEDIFF_ORT_ARENA").is_some() {
            return; // the environment decides
        }
        let unet = |h: usize| vec![(vec![2, 4, 16, h, h], false), (vec![2], false), (vec![2, 77, 768], false)];
        let vae = |h: usize| vec![(vec![1, 4, h, h], false)];
        let text = vec![(vec![2, 77], true)];
        let auto = CpuArena::Auto;
        assert!(auto.enabled(&text));
        assert!(auto.enabled(&unet(8)) && auto.enabled(&unet(16)) && auto.enabled(&unet(31)));
        assert!(!auto.enabled(&unet(32)) && !auto.enabled(&unet(64)));
        assert!(auto.enabled(&vae(16)) && !auto.enabled(&vae(64)));
        assert!(CpuArena::On.enabled(&unet(64)) && !CpuArena::Off.enabled(&text));
    }
}
