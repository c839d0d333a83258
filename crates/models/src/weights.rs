//! Weights by prefix, like candle's `VarBuilder`: `w.pp("resnets").pp("0").read("conv1.weight",
//! shape)` reads one canonical tensor, checks its shape, merges the LoRAs into it and writes it
//! into the graph. The tree of `pp` calls mirrors the checkpoint's key tree.
//!
//! Weights of a scope that a LoRA changes go to the graph's volatile data set, the others to the
//! stable one; when the graph re-uses the stable files of a previous build (a rebuild where only
//! LoRA multipliers changed), stable weights are not even read ([`Weights::reused`]).

use animatediff_formats::{ComponentWeights, LoraSet};
use onnx_writer::{DataSet, ElemType, Graph, Value};

use crate::error::{BuildError, Result};

/// One component's weights (with the LoRAs merged into them) under a key prefix.
#[derive(Clone)]
pub struct Weights<'a> {
    component: &'a ComponentWeights,
    loras: Option<&'a LoraSet>,
    prefix: String,
}

impl<'a> Weights<'a> {
    /// The component's root scope.
    pub fn new(component: &'a ComponentWeights, loras: Option<&'a LoraSet>) -> Self {
        Self { component, loras, prefix: String::new() }
    }

    /// A sub-scope: `prefix.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        Self { component: self.component, loras: self.loras, prefix: self.full(&name.to_string()) }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
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
        if let Some(v) = self.reused(g, name, shape, g.weight_type) {
            return Ok(v);
        }
        let data = self.read(name, shape)?;
        self.put(g, name, shape, &data)
    }

    /// Reads `name` and writes it as f32 whatever the graph's weight type (norm parameters).
    pub fn tensor_f32(&self, g: &mut Graph, name: &str, shape: &[usize]) -> Result<Value> {
        if let Some(v) = self.reused(g, name, shape, ElemType::F32) {
            return Ok(v);
        }
        let data = self.read(name, shape)?;
        self.put_f32(g, name, shape, &data)
    }

    /// Writes `data` as f32 under this scope's `name`.
    pub fn put_f32(&self, g: &mut Graph, name: &str, shape: &[usize], data: &[f32]) -> Result<Value> {
        self.put_as(g, name, shape, data, ElemType::F32)
    }

    /// Writes `data` under this scope's `name`.
    pub fn put(&self, g: &mut Graph, name: &str, shape: &[usize], data: &[f32]) -> Result<Value> {
        self.put_as(g, name, shape, data, g.weight_type)
    }

    fn put_as(&self, g: &mut Graph, name: &str, shape: &[usize], data: &[f32], elem: ElemType) -> Result<Value> {
        let full = self.full(name);
        let set = if self.volatile(name) { DataSet::Volatile } else { DataSet::Stable };
        g.weight_in(&full, shape, data, elem, set).map_err(|source| BuildError::Io { what: format!("weight {full}"), source })
    }

    /// Whether a weight written as `name` here can change with the LoRA multipliers: a LoRA
    /// changes some weight of this scope (a whole module: its weights may be derived from each
    /// other, e.g. GEGLU's halves from one projection).
    fn volatile(&self, name: &str) -> bool {
        let Some(l) = self.loras else { return false };
        let scope = if self.prefix.is_empty() { self.full(name) } else { self.prefix.to_owned() };
        l.touches(self.component.kind, &scope) || l.touches_module(self.component.kind, &scope)
    }

    /// The weight `name` (as written here, `shape`, `elem`) taken from the previous build's files
    /// when the graph re-uses them and it is not volatile: no read, no conversion.
    pub fn reused(&self, g: &mut Graph, name: &str, shape: &[usize], elem: ElemType) -> Option<Value> {
        if self.volatile(name) {
            return None;
        }
        g.reused_weight(&self.full(name), shape, elem)
    }
}
