//! Weights by prefix, like candle's `VarBuilder`: `w.pp("resnets").pp("0").read("conv1.weight",
//! shape)` reads one canonical tensor, checks its shape, merges the LoRAs into it and writes it
//! into the graph. The tree of `pp` calls mirrors the checkpoint's key tree.

use animatediff_formats::{ComponentWeights, LoraSet};
use onnx_writer::{Graph, Value};

use crate::error::{BuildError, Result};

#[derive(Clone, Copy)]
pub struct Weights<'a> {
    component: &'a ComponentWeights,
    loras: Option<&'a LoraSet>,
    prefix: &'a str,
}

/// Owned prefix holder so that `pp` can return a `Weights` borrowing from it.
pub struct Scope<'a> {
    component: &'a ComponentWeights,
    loras: Option<&'a LoraSet>,
    prefix: String,
}

impl<'a> Scope<'a> {
    pub fn w(&self) -> Weights<'_> {
        Weights { component: self.component, loras: self.loras, prefix: &self.prefix }
    }
}

impl<'a> Weights<'a> {
    pub fn new(component: &'a ComponentWeights, loras: Option<&'a LoraSet>) -> Scope<'a> {
        Scope { component, loras, prefix: String::new() }
    }

    /// A sub-scope: `prefix.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Scope<'a> {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Scope { component: self.component, loras: self.loras, prefix }
    }

    pub fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.component.contains(&self.full(name))
    }

    /// The stored shape of `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.component.shape(&self.full(name))?.to_vec())
    }

    /// Reads `name` (shape-checked, LoRAs merged) as f32.
    pub fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = self.full(name);
        let mut v = self.component.read_checked(&full, shape)?;
        if let Some(l) = self.loras {
            l.apply(self.component.kind, &full, shape, &mut v)?;
        }
        Ok(v)
    }

    /// Reads `name` and writes it into the graph unchanged.
    pub fn tensor(&self, g: &mut Graph, name: &str, shape: &[usize]) -> Result<Value> {
        let data = self.read(name, shape)?;
        self.put(g, name, shape, &data)
    }

    /// Reads `name` and writes it as f32 whatever the graph's weight type (norm parameters).
    pub fn tensor_f32(&self, g: &mut Graph, name: &str, shape: &[usize]) -> Result<Value> {
        let data = self.read(name, shape)?;
        self.put_f32(g, name, shape, &data)
    }

    /// Writes `data` as f32 under this scope's `name`.
    pub fn put_f32(&self, g: &mut Graph, name: &str, shape: &[usize], data: &[f32]) -> Result<Value> {
        let full = self.full(name);
        g.weight_as(&full, shape, data, onnx_writer::ElemType::F32)
            .map_err(|source| BuildError::Io { what: format!("weight {full}"), source })
    }

    /// Writes `data` under this scope's `name`.
    pub fn put(&self, g: &mut Graph, name: &str, shape: &[usize], data: &[f32]) -> Result<Value> {
        let full = self.full(name);
        g.weight(&full, shape, data).map_err(|source| BuildError::Io { what: format!("weight {full}"), source })
    }
}
