//! ONNX Runtime through `ort`: one session per graph, on the execution provider that
//! `crate::providers` registers for it, in the process's one ONNX Runtime environment
//! (`crate::ort_env`).

use std::path::Path;

use super::{GraphSession, Tensor};
use crate::error::{Error, Result};
use crate::providers::Ep;

/// A graph as an ONNX Runtime session.
pub(crate) struct OrtSession {
    session: ort::session::Session,
    inputs: Vec<String>,
    name: String,
}

fn ort_error(graph: &str, e: ort::Error) -> Error {
    Error::Runtime { runtime: "ONNX Runtime", graph: graph.to_owned(), reason: e.to_string() }
}

impl OrtSession {
    /// Loads `path` on `ep`, registered as `provider`; `available` lists the providers usable here,
    /// for the error when ONNX Runtime refuses the registration.
    pub(crate) fn load(
        path: &Path,
        env: &ort::environment::Environment,
        ep: Ep,
        provider: ort::ep::ExecutionProviderDispatch,
        available: impl FnOnce() -> String,
    ) -> Result<Self> {
        let name = path.display().to_string();
        let err = |e: ort::Error| ort_error(&name, e);
        let builder = ort::session::Session::builder(env).map_err(err)?;
        let mut builder = builder.with_execution_providers([provider]).map_err(|e| Error::ProviderUnavailable {
            requested: ep.to_string(),
            reason: e.to_string(),
            available: available(),
            fix: None,
        })?;
        let session = builder.commit_from_file(path).map_err(err)?;
        let inputs = session.inputs().iter().map(|i| i.name().to_owned()).collect();
        Ok(Self { session, inputs, name })
    }
}

impl GraphSession for OrtSession {
    fn run_all(&mut self, inputs: &[Tensor]) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        let name = self.name.clone();
        let err = |e: ort::Error| ort_error(&name, e);
        let mut values: Vec<(String, ort::session::SessionInputValue)> = Vec::new();
        for (n, t) in self.inputs.iter().zip(inputs) {
            let v: ort::session::SessionInputValue = match t {
                Tensor::F32 { shape, data } => ort::value::Tensor::from_array((shape.clone(), data.clone())).map_err(err)?.into(),
                Tensor::I64 { shape, data } => ort::value::Tensor::from_array((shape.clone(), data.clone())).map_err(err)?.into(),
            };
            values.push((n.clone(), v));
        }
        let out = self.session.run(values).map_err(err)?;
        let mut all = Vec::with_capacity(out.len());
        for (_, value) in out.iter() {
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(err)?;
            all.push((shape.iter().map(|&d| d as usize).collect(), data.to_vec()));
        }
        Ok(all)
    }
}
