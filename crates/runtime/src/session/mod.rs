//! What every runtime shares: the tensors that cross into a graph ([`Tensor`]), the description of
//! a graph's inputs that a runtime needs before it loads one ([`InputSpec`]), and the loaded graph
//! itself ([`GraphSession`]). The runtimes behind the trait live in the submodules: tract here in
//! `tract`, ONNX Runtime in `ort` (its execution providers in `crate::providers`).

pub(crate) mod ort;
pub(crate) mod tract;

use crate::error::Result;

/// Element type of a graph input or output (in a manifest: `float32`, `int64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DType {
    /// 32-bit float: latents, timesteps, text embeddings.
    #[serde(rename = "float32")]
    F32,
    /// 64-bit integer: token ids.
    #[serde(rename = "int64")]
    I64,
}

/// One graph input as a runtime must know it before loading the graph: tract fixes every input's
/// shape and element type up front and optimises for them; ONNX Runtime's CPU arena policy reads
/// the shapes too (see [`CpuArena`](crate::CpuArena)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    /// The input's dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The input's element type.
    pub dtype: DType,
}

impl InputSpec {
    /// An f32 input of this shape.
    pub fn f32(shape: impl Into<Vec<usize>>) -> Self {
        Self { shape: shape.into(), dtype: DType::F32 }
    }

    /// An i64 input of this shape.
    pub fn i64(shape: impl Into<Vec<usize>>) -> Self {
        Self { shape: shape.into(), dtype: DType::I64 }
    }
}

/// A dense tensor crossing the runtime boundary, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    /// f32 values.
    F32 {
        /// Dimensions, outermost first.
        shape: Vec<usize>,
        /// The values, `shape.iter().product()` of them.
        data: Vec<f32>,
    },
    /// i64 values.
    I64 {
        /// Dimensions, outermost first.
        shape: Vec<usize>,
        /// The values, `shape.iter().product()` of them.
        data: Vec<i64>,
    },
}

impl Tensor {
    /// The tensor's dimensions.
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32 { shape, .. } | Tensor::I64 { shape, .. } => shape,
        }
    }

    /// The tensor's element type.
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32 { .. } => DType::F32,
            Tensor::I64 { .. } => DType::I64,
        }
    }

    /// The input description a graph taking this tensor is loaded with.
    pub fn spec(&self) -> InputSpec {
        InputSpec { shape: self.shape().to_vec(), dtype: self.dtype() }
    }
}

/// A graph loaded on one runtime ([`Runtime::load`](crate::Runtime::load)), ready to run with the
/// input shapes it was loaded for.
pub trait GraphSession {
    /// Runs with inputs in the graph's declared order; returns the first output (f32) as its shape
    /// and values.
    fn run(&mut self, inputs: &[Tensor]) -> Result<(Vec<usize>, Vec<f32>)> {
        let mut all = self.run_all(inputs)?;
        Ok(all.swap_remove(0))
    }

    /// Runs with inputs in the graph's declared order; returns every output (f32), in the
    /// graph's order, as its shape and values.
    fn run_all(&mut self, inputs: &[Tensor]) -> Result<Vec<(Vec<usize>, Vec<f32>)>>;

    /// Runs once timing every operation of the optimised graph, in execution order (tract only;
    /// `None` where the runtime has no per-operation hook). For benchmarks, not the product path.
    fn profile(&mut self, _inputs: &[Tensor]) -> Result<Option<Vec<OpTiming>>> {
        Ok(None)
    }
}

/// One operation's wall time in a profiled run ([`GraphSession::profile`]; for benchmarks and
/// diagnostics).
#[derive(Clone, Debug)]
pub struct OpTiming {
    /// The node's name in the optimised graph.
    pub node: String,
    /// The operation's kind (tract's op name).
    pub op: String,
    /// The operation's own description (tract's `info`), e.g. a convolution's geometry.
    pub info: String,
    /// The shapes of the values the operation read.
    pub input_shapes: Vec<Vec<usize>>,
    /// Wall time of the operation.
    pub seconds: f64,
    /// Bytes of activations alive once the operation has run, as the runtime's plan frees them
    /// (tract: every node output not yet past its last reader, constants excluded); 0 where
    /// unknown.
    pub live_bytes: u64,
    /// At the operation where `live_bytes` peaks (and only there): the activations alive, largest
    /// first, as (producing node, bytes).
    pub alive_at_peak: Vec<(String, u64)>,
}
