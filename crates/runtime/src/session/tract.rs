//! tract, the pure-Rust runtime (the default, nothing to install): imports a graph for fixed input
//! shapes, applies this crate's load-time rewrites ([`crate::tract_rewrite`]) and runs the
//! optimised plan on one thread pool shared by every tract session of the process.

use std::path::Path;
use std::sync::OnceLock;

use super::{DType, GraphSession, InputSpec, OpTiming, Tensor};
use crate::error::{Error, Result};

/// A graph as tract's runnable plan.
pub(crate) struct TractSession {
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

/// The graph at `path` as tract's typed model for the given inputs, decluttered: what
/// [`crate::tract_rewrite`] rewrites before a tract session optimises it. For tests and
/// diagnostics of those rewrites; [`Runtime::load`](crate::Runtime::load) is the product path.
pub fn tract_decluttered(path: &Path, inputs: &[InputSpec]) -> Result<tract_onnx::prelude::TypedModel> {
    use tract_onnx::prelude::*;
    let name = path.display().to_string();
    let err = |e: TractError| tract_error(&name, e);
    let mut model = tract_onnx::onnx().model_for_path(path).map_err(err)?;
    for (i, input) in inputs.iter().enumerate() {
        let fact: InferenceFact = match input.dtype {
            DType::I64 => i64::fact(&input.shape).into(),
            DType::F32 => f32::fact(&input.shape).into(),
        };
        model.set_input_fact(i, fact).map_err(err)?;
    }
    model.into_typed().and_then(|m| m.into_decluttered()).map_err(err)
}

impl TractSession {
    /// Imports, rewrites (see [`crate::tract_rewrite`]) and optimises the graph for `inputs`.
    pub(crate) fn load(path: &Path, inputs: &[InputSpec]) -> Result<Self> {
        use tract_onnx::prelude::*;
        let name = path.display().to_string();
        let err = |e: TractError| tract_error(&name, e);
        let mut typed = tract_decluttered(path, inputs)?;
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
                super::Tensor::F32 { shape, data } => tract_onnx::prelude::Tensor::from_shape(shape, data).map(Into::into),
                super::Tensor::I64 { shape, data } => tract_onnx::prelude::Tensor::from_shape(shape, data).map(Into::into),
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

    fn run_all(&mut self, inputs: &[Tensor]) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        let values = self.values(inputs)?;
        let out = tract_linalg::multithread::multithread_tract_scope(tract_executor(), || self.plan.run(values))
            .map_err(|e| self.error(e))?;
        out.iter()
            .map(|o| {
                let view = o.to_plain_array_view::<f32>().map_err(|e| self.error(e))?;
                Ok((view.shape().to_vec(), view.iter().copied().collect()))
            })
            .collect()
    }
}
