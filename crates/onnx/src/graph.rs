//! A graph under construction: inputs, nodes, initializers, outputs. Weights are written as they
//! are added — inline in the model, or streamed to an external-data file next to it (so a model
//! larger than protobuf's 2 GB limit can be written without holding its weights in memory).

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::attention_form::AttentionForm;
use crate::proto::*;

/// A value flowing through the graph (the name of a node output, input or initializer).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Value(pub String);

/// A graph input/output dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
}

impl Dim {
    pub fn sym(name: &str) -> Dim {
        Dim::Symbolic(name.to_owned())
    }

    /// `Fixed(v)` when the size is known, else the symbol `name`.
    pub fn fixed_or_sym(v: Option<usize>, name: &str) -> Dim {
        v.map(Dim::Fixed).unwrap_or_else(|| Dim::sym(name))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    F32,
    F16,
    I64,
}

impl ElemType {
    pub fn onnx(self) -> i32 {
        match self {
            ElemType::F32 => data_type::FLOAT,
            ElemType::F16 => data_type::FLOAT16,
            ElemType::I64 => data_type::INT64,
        }
    }
}

/// Where initializer bytes go.
// One per graph: boxing the external variant would save nothing worth its indirection.
#[allow(clippy::large_enum_variant)]
pub enum WeightStorage {
    /// Inside the model file (for models well under 2 GB). The bytes are spilled to a temporary
    /// file while the graph is built and streamed into the model by [`Graph::finish`], so the
    /// whole model is never held in memory.
    Inline,
    /// Streamed into external-data files beside the model: `<name>`, then `<name>.1`, `<name>.2`,
    /// ... each kept under `max_file_bytes` (no file over protobuf's 2 GB, spec'd for portability).
    External(ExternalData),
}

/// Which set of external-data files a weight goes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataSet {
    /// The bulk of the weights.
    #[default]
    Stable,
    /// Weights expected to change between otherwise identical builds (e.g. merged adapters whose
    /// scale changes), kept in their own files (see [`ExternalData::with_volatile`]) so that a
    /// rebuild can re-use the stable files of the previous one ([`ExternalData::reusing`]).
    Volatile,
}

pub struct ExternalData {
    stable: Stream,
    /// Created on the first volatile weight; without [`ExternalData::with_volatile`] volatile
    /// weights go with the stable ones.
    volatile: Option<Stream>,
    volatile_path: Option<PathBuf>,
    max_file_bytes: u64,
}

enum Stream {
    Writing(Shards),
    /// The files of a previous build, already in place: weights are looked up, not written.
    Reusing(Reused),
}

/// A growing set of shards `<name>`, `<name>.1`, ...
struct Shards {
    dir: PathBuf,
    base_name: String,
    max_file_bytes: u64,
    files: Vec<String>,
    writer: BufWriter<File>,
    offset: u64,
}

/// The externally stored initializers of a previously written model that live in a given set of
/// files: name → location, with their element type and dims (checked when re-used).
pub struct Reused {
    files: Vec<String>,
    tensors: std::collections::HashMap<String, TensorProto>,
}

impl Reused {
    /// Reads the initializers of `model` (an ONNX file we wrote) stored in `files`.
    pub fn from_model(model: &Path, files: &[String]) -> std::io::Result<Self> {
        let bytes = std::fs::read(model)?;
        let m = ModelProto::decode(bytes.as_slice())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", model.display())))?;
        let tensors = m
            .graph
            .map(|g| g.initializer)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.data_location == 1 && t.external_data.iter().any(|e| e.key == "location" && files.contains(&e.value)))
            .map(|t| (t.name.clone(), t))
            .collect();
        Ok(Self { files: files.to_vec(), tensors })
    }

    /// Number of tensors that can be re-used.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The stored tensor `name` if its element type and dims are these.
    fn get(&self, name: &str, dims: &[i64], data_type: i32) -> Option<&TensorProto> {
        self.tensors.get(name).filter(|t| t.dims == dims && t.data_type == data_type)
    }
}

/// Default cap of one external-data file: just under 2 GiB.
pub const MAX_EXTERNAL_FILE_BYTES: u64 = (2 << 30) - (64 << 20);

impl WeightStorage {
    /// Streams weights to `path` (and further shards beside it when it would pass `max_file_bytes`).
    pub fn external(path: &Path, max_file_bytes: u64) -> std::io::Result<Self> {
        Ok(WeightStorage::External(ExternalData::new(path, max_file_bytes)?))
    }

    /// Names of the external-data files written (or re-used) so far, stable ones first.
    pub fn files(&self) -> Vec<String> {
        match self {
            WeightStorage::Inline => Vec::new(),
            WeightStorage::External(e) => e.files(),
        }
    }
}

impl Shards {
    fn create(path: &Path, max_file_bytes: u64) -> std::io::Result<Self> {
        let base_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| std::io::Error::other(format!("{}: not a file name", path.display())))?
            .to_owned();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Shards {
            writer: BufWriter::with_capacity(1 << 22, File::create(path)?),
            dir,
            files: vec![base_name.clone()],
            base_name,
            max_file_bytes,
            offset: 0,
        })
    }

    /// Appends `bytes` (aligned), opening the next shard first if this one would grow too large.
    /// Returns (file name, offset).
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<(String, u64)> {
        let align = if bytes.len() as u64 >= PAGE { PAGE } else { SMALL_ALIGN };
        let mut pad = (align - self.offset % align) % align;
        if self.offset > 0 && self.offset + pad + bytes.len() as u64 > self.max_file_bytes {
            self.writer.flush()?;
            let name = format!("{}.{}", self.base_name, self.files.len());
            self.writer = BufWriter::with_capacity(1 << 22, File::create(self.dir.join(&name))?);
            self.files.push(name);
            self.offset = 0;
            pad = 0;
        }
        self.writer.write_all(&vec![0u8; pad as usize])?;
        self.offset += pad;
        let at = self.offset;
        self.writer.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok((self.files.last().unwrap().clone(), at))
    }

    fn finish(self) -> std::io::Result<()> {
        let f = self.writer.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()
    }
}

impl Stream {
    fn files(&self) -> &[String] {
        match self {
            Stream::Writing(s) => &s.files,
            Stream::Reusing(r) => &r.files,
        }
    }
}

impl ExternalData {
    pub fn new(path: &Path, max_file_bytes: u64) -> std::io::Result<Self> {
        Ok(Self { stable: Stream::Writing(Shards::create(path, max_file_bytes)?), volatile: None, volatile_path: None, max_file_bytes })
    }

    /// Volatile weights go to `path` (and its shards), created when the first one is written.
    pub fn with_volatile(mut self, path: &Path) -> Self {
        self.volatile_path = Some(path.to_path_buf());
        self
    }

    /// Stable weights are not written but taken from `reused` (files of a previous build that the
    /// caller has put in place beside the model): every stable weight must be found there, with
    /// the same element type and dims.
    pub fn reusing(max_file_bytes: u64, reused: Reused) -> Self {
        Self { stable: Stream::Reusing(reused), volatile: None, volatile_path: None, max_file_bytes }
    }

    pub fn files(&self) -> Vec<String> {
        let mut f = self.stable.files().to_vec();
        if let Some(v) = &self.volatile {
            f.extend(v.files().iter().cloned());
        }
        f
    }

    /// Stores `bytes` of tensor `t` in `set`; fills in its external-data location.
    fn store(&mut self, t: &mut TensorProto, bytes: &[u8], set: DataSet) -> std::io::Result<()> {
        let stream = match (set, &self.volatile_path) {
            (DataSet::Volatile, Some(path)) => {
                if self.volatile.is_none() {
                    self.volatile = Some(Stream::Writing(Shards::create(path, self.max_file_bytes)?));
                }
                self.volatile.as_mut().unwrap()
            }
            _ => &mut self.stable,
        };
        match stream {
            Stream::Writing(shards) => {
                let (file, offset) = shards.append(bytes)?;
                t.data_location = 1;
                t.external_data =
                    vec![entry("location", &file), entry("offset", &offset.to_string()), entry("length", &bytes.len().to_string())];
            }
            Stream::Reusing(r) => {
                let old = r.get(&t.name, &t.dims, t.data_type).ok_or_else(|| {
                    std::io::Error::other(format!("weight {}: not in the re-used files of the previous build", t.name))
                })?;
                let old_len = old.external_data.iter().find(|e| e.key == "length").map(|e| e.value.as_str());
                if old_len != Some(bytes.len().to_string().as_str()) {
                    return Err(std::io::Error::other(format!("weight {}: its size differs from the previous build's", t.name)));
                }
                t.data_location = 1;
                t.external_data = old.external_data.clone();
            }
        }
        Ok(())
    }

    fn finish(self) -> std::io::Result<()> {
        for s in [Some(self.stable), self.volatile].into_iter().flatten() {
            if let Stream::Writing(shards) = s {
                shards.finish()?;
            }
        }
        Ok(())
    }
}

/// Called after each weight is written, with its name and byte size.
type Progress = Box<dyn FnMut(&str, u64)>;

/// Offsets of large tensors are page-aligned so runtimes can memory-map them.
const PAGE: u64 = 4096;
const SMALL_ALIGN: u64 = 64;

pub struct Graph {
    name: String,
    pub opset: i64,
    /// Operator domains other than the default one that nodes use, with their versions.
    domains: Vec<(String, i64)>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    next_id: usize,
    scope: Vec<String>,
    storage: WeightStorage,
    /// Element type weights are stored in.
    pub weight_type: ElemType,
    /// The ONNX form attention is written in ([`AttentionForm`]).
    pub attention_form: AttentionForm,
    /// Element type of activations (F16 graphs keep statistics and softmax in F32 through casts).
    pub act: ElemType,
    /// Number of weight tensors and bytes written so far.
    pub weights_written: (usize, u64),
    progress: Option<Progress>,
    /// Inline weights spilled to a temporary file: (initializer index, offset, length).
    spill: Option<(BufWriter<File>, u64)>,
    spilled: Vec<(usize, u64, u64)>,
}

impl Graph {
    pub fn new(name: &str, opset: i64, storage: WeightStorage) -> Self {
        Self {
            name: name.to_owned(),
            opset,
            domains: Vec::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            next_id: 0,
            scope: Vec::new(),
            storage,
            weight_type: ElemType::F32,
            act: ElemType::F32,
            attention_form: AttentionForm::default(),
            weights_written: (0, 0),
            progress: None,
            spill: None,
            spilled: Vec::new(),
        }
    }

    /// Called after each weight is written with its name and byte size.
    pub fn on_weight(&mut self, f: impl FnMut(&str, u64) + 'static) {
        self.progress = Some(Box::new(f));
    }

    /// Runs `f` with node names prefixed by `scope` (for readable graphs).
    pub fn scoped<T>(&mut self, scope: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        self.scope.push(scope.to_owned());
        let r = f(self);
        self.scope.pop();
        r
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.next_id += 1;
        if self.scope.is_empty() {
            format!("{hint}_{}", self.next_id)
        } else {
            format!("{}/{hint}_{}", self.scope.join("/"), self.next_id)
        }
    }

    pub fn input(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> Value {
        self.inputs.push(value_info(name, elem, dims));
        Value(name.to_owned())
    }

    /// Declares `v` as a graph output called `name`.
    pub fn output(&mut self, v: &Value, name: &str, elem: ElemType, dims: &[Dim]) {
        self.nodes.push(NodeProto {
            input: vec![v.0.clone()],
            output: vec![name.to_owned()],
            name: format!("output/{name}"),
            op_type: "Identity".into(),
            ..Default::default()
        });
        self.outputs.push(value_info(name, elem, dims));
    }

    /// Adds a node with one output.
    pub fn op(&mut self, op_type: &str, inputs: &[&Value], attrs: Vec<AttributeProto>) -> Value {
        self.op_n(op_type, inputs, attrs, 1).pop().unwrap()
    }

    /// Adds a node with `n` outputs.
    pub fn op_n(&mut self, op_type: &str, inputs: &[&Value], attribute: Vec<AttributeProto>, n: usize) -> Vec<Value> {
        self.node_in("", op_type, inputs, attribute, n)
    }

    /// Adds a node with one output of an operator outside the default ONNX domain (for example
    /// ONNX Runtime's `com.microsoft`); the model then imports that domain at `version`.
    pub fn op_in(&mut self, domain: &str, version: i64, op_type: &str, inputs: &[&Value], attrs: Vec<AttributeProto>) -> Value {
        match self.domains.iter().find(|(d, _)| d == domain) {
            Some((_, v)) => assert_eq!(*v, version, "domain {domain} imported at two versions"),
            None => self.domains.push((domain.to_owned(), version)),
        }
        self.node_in(domain, op_type, inputs, attrs, 1).pop().unwrap()
    }

    fn node_in(&mut self, domain: &str, op_type: &str, inputs: &[&Value], attribute: Vec<AttributeProto>, n: usize) -> Vec<Value> {
        let name = self.fresh(op_type);
        let outputs: Vec<String> = (0..n).map(|i| if n == 1 { name.clone() } else { format!("{name}:{i}") }).collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|v| v.0.clone()).collect(),
            output: outputs.clone(),
            name,
            op_type: op_type.to_owned(),
            attribute,
            domain: domain.to_owned(),
        });
        outputs.into_iter().map(Value).collect()
    }

    /// A small constant, stored in the model (shape vectors, scalars, tables).
    pub fn const_f32(&mut self, shape: &[usize], data: &[f32]) -> Value {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "constant shape");
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            name: name.clone(),
            raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        Value(name)
    }

    pub fn scalar_f32(&mut self, v: f32) -> Value {
        self.const_f32(&[], &[v])
    }

    /// A constant in the activation type.
    pub fn const_act(&mut self, shape: &[usize], data: &[f32]) -> Value {
        if self.act != ElemType::F16 {
            return self.const_f32(shape, data);
        }
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT16,
            name: name.clone(),
            raw_data: data.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
            ..Default::default()
        });
        Value(name)
    }

    /// A scalar in the activation type.
    pub fn scalar(&mut self, v: f32) -> Value {
        self.const_act(&[], &[v])
    }

    /// Casts to f32 when activations are not f32 (statistics, softmax, graph outputs).
    pub fn to_f32(&mut self, x: &Value) -> Value {
        if self.act == ElemType::F32 {
            return x.clone();
        }
        self.op("Cast", &[x], vec![attr_i("to", data_type::FLOAT as i64)])
    }

    /// Casts an f32 value to the activation type.
    pub fn to_act(&mut self, x: &Value) -> Value {
        if self.act == ElemType::F32 {
            return x.clone();
        }
        self.op("Cast", &[x], vec![attr_i("to", self.act.onnx() as i64)])
    }

    /// A 1-D int64 constant.
    pub fn const_i64(&mut self, data: &[i64]) -> Value {
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            dims: vec![data.len() as i64],
            data_type: data_type::INT64,
            name: name.clone(),
            raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        Value(name)
    }

    /// A weight: stored with `weight_type`, inline or streamed to the external-data file.
    pub fn weight(&mut self, name: &str, shape: &[usize], data: &[f32]) -> std::io::Result<Value> {
        self.weight_as(name, shape, data, self.weight_type)
    }

    /// A weight stored with an explicit element type (e.g. f32 norm parameters in an f16 graph).
    pub fn weight_as(&mut self, name: &str, shape: &[usize], data: &[f32], elem: ElemType) -> std::io::Result<Value> {
        self.weight_in(name, shape, data, elem, DataSet::Stable)
    }

    /// A weight of `elem` in the given set of external-data files.
    pub fn weight_in(&mut self, name: &str, shape: &[usize], data: &[f32], elem: ElemType, set: DataSet) -> std::io::Result<Value> {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "weight {name}: shape and data differ");
        let bytes: Vec<u8> = match elem {
            ElemType::F16 => data.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
            _ => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        let mut t = TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: elem.onnx(),
            name: name.to_owned(),
            ..Default::default()
        };
        match &mut self.storage {
            WeightStorage::Inline => {
                if self.spill.is_none() {
                    self.spill = Some((BufWriter::with_capacity(1 << 22, tempfile::tempfile()?), 0));
                }
                let (w, offset) = self.spill.as_mut().unwrap();
                w.write_all(&bytes)?;
                self.spilled.push((self.initializers.len(), *offset, bytes.len() as u64));
                *offset += bytes.len() as u64;
            }
            WeightStorage::External(ext) => ext.store(&mut t, &bytes, set)?,
        }
        Ok(self.push_weight(t, bytes.len() as u64))
    }

    /// The stable weight `name` taken from the files of a previous build, when this graph re-uses
    /// them ([`ExternalData::reusing`]) and they hold `name` with this element type and shape:
    /// the caller can then skip reading and converting its data. `None` otherwise.
    pub fn reused_weight(&mut self, name: &str, shape: &[usize], elem: ElemType) -> Option<Value> {
        let WeightStorage::External(ExternalData { stable: Stream::Reusing(r), .. }) = &self.storage else { return None };
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let old = r.get(name, &dims, elem.onnx())?.clone();
        let len = old.external_data.iter().find(|e| e.key == "length").and_then(|e| e.value.parse().ok()).unwrap_or(0);
        Some(self.push_weight(old, len))
    }

    fn push_weight(&mut self, t: TensorProto, len: u64) -> Value {
        let name = t.name.clone();
        self.initializers.push(t);
        self.weights_written.0 += 1;
        self.weights_written.1 += len;
        if let Some(p) = &mut self.progress {
            p(&name, len);
        }
        Value(name)
    }

    /// Writes the model to `path` (and flushes the external-data file). Returns the model's size.
    ///
    /// Inline weights are streamed from their spill file: the graph is encoded without them, and
    /// each is appended as one more `initializer` field (protobuf concatenates repeated fields),
    /// with every length computed up front. Memory stays at one buffer, whatever the model size.
    pub fn finish(mut self, path: &Path, producer: &str, metadata: &[(String, String)]) -> std::io::Result<u64> {
        use prost::encoding::{encode_varint, encoded_len_varint};
        if let WeightStorage::External(ext) = std::mem::replace(&mut self.storage, WeightStorage::Inline) {
            ext.finish()?;
        }
        let (kept, spilled) = self.split_spilled();
        let graph = GraphProto {
            node: std::mem::take(&mut self.nodes),
            name: std::mem::take(&mut self.name),
            initializer: kept,
            doc_string: String::new(),
            input: std::mem::take(&mut self.inputs),
            output: std::mem::take(&mut self.outputs),
            value_info: Vec::new(),
        };
        let model = self.model_proto(producer, metadata);
        let mut graph_len = graph.encoded_len() as u64;
        for s in &spilled {
            let tl = s.tensor_len();
            graph_len += 1 + encoded_len_varint(tl) as u64 + tl;
        }
        let model_len = model.encoded_len() as u64 + 1 + encoded_len_varint(graph_len) as u64 + graph_len;
        if model_len >= 2 << 30 {
            return Err(std::io::Error::other(format!(
                "{}: the model would be {model_len} bytes, over protobuf's 2 GiB limit; store its weights as external data",
                path.display()
            )));
        }

        let mut out = BufWriter::with_capacity(1 << 22, File::create(path)?);
        let mut head = Vec::new();
        model.encode(&mut head).map_err(std::io::Error::other)?;
        encode_varint((7 << 3) | 2, &mut head); // ModelProto.graph
        encode_varint(graph_len, &mut head);
        graph.encode(&mut head).map_err(std::io::Error::other)?;
        out.write_all(&head)?;
        if let Some((w, _)) = self.spill.take() {
            let spill = w.into_inner().map_err(|e| e.into_error())?;
            stream_spilled(spill, &spilled, &mut out)?;
        }
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        let written = f.metadata()?.len();
        debug_assert_eq!(written, model_len);
        Ok(written)
    }

    /// Splits the initializers into those encoded with the graph and the spilled ones (their
    /// metadata; the bytes stay in the spill file).
    fn split_spilled(&mut self) -> (Vec<TensorProto>, Vec<Spilled>) {
        let mut spilled_meta = Vec::new();
        let mut kept = Vec::new();
        let mut spilled = self.spilled.iter().peekable();
        for (i, t) in std::mem::take(&mut self.initializers).into_iter().enumerate() {
            match spilled.peek() {
                Some((idx, off, len)) if *idx == i => {
                    spilled_meta.push(Spilled { meta: t, offset: *off, len: *len });
                    spilled.next();
                }
                _ => kept.push(t),
            }
        }
        (kept, spilled_meta)
    }

    /// The model without its graph (encoded separately by [`Graph::finish`]).
    fn model_proto(&self, producer: &str, metadata: &[(String, String)]) -> ModelProto {
        ModelProto {
            ir_version: 8,
            opset_import: std::iter::once(OperatorSetIdProto { domain: String::new(), version: self.opset })
                .chain(self.domains.iter().map(|(domain, version)| OperatorSetIdProto { domain: domain.clone(), version: *version }))
                .collect(),
            producer_name: "animatediff-onnx".into(),
            producer_version: producer.to_owned(),
            doc_string: String::new(),
            graph: None,
            metadata_props: metadata.iter().map(|(k, v)| entry(k, v)).collect(),
        }
    }

    /// External-data files written so far (empty for inline weights).
    pub fn external_files(&self) -> Vec<String> {
        self.storage.files()
    }

    /// External-data files of one data set (those of the stable set include re-used ones).
    pub fn external_files_in(&self, set: DataSet) -> Vec<String> {
        match (&self.storage, set) {
            (WeightStorage::External(e), DataSet::Stable) => e.stable.files().to_vec(),
            (WeightStorage::External(e), DataSet::Volatile) => e.volatile.as_ref().map(|v| v.files().to_vec()).unwrap_or_default(),
            (WeightStorage::Inline, _) => Vec::new(),
        }
    }

    /// Number of nodes so far.
    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }
}

/// An inline weight in the spill file: its initializer without `raw_data`, and where its bytes are.
struct Spilled {
    meta: TensorProto,
    offset: u64,
    len: u64,
}

impl Spilled {
    /// The initializer's encoded length with `raw_data` (field 9) of `len` bytes appended.
    fn tensor_len(&self) -> u64 {
        self.meta.encoded_len() as u64 + 1 + prost::encoding::encoded_len_varint(self.len) as u64 + self.len
    }
}

/// Appends each spilled weight to `out` as one more `GraphProto.initializer` field, its bytes
/// copied from the spill file.
fn stream_spilled(mut spill: File, spilled: &[Spilled], out: &mut impl Write) -> std::io::Result<()> {
    use prost::encoding::encode_varint;
    let mut buf = vec![0u8; 1 << 22];
    for s in spilled {
        let mut field = Vec::new();
        encode_varint((5 << 3) | 2, &mut field); // GraphProto.initializer
        encode_varint(s.tensor_len(), &mut field);
        s.meta.encode(&mut field).map_err(std::io::Error::other)?;
        encode_varint((9 << 3) | 2, &mut field); // TensorProto.raw_data
        encode_varint(s.len, &mut field);
        out.write_all(&field)?;
        spill.seek(std::io::SeekFrom::Start(s.offset))?;
        let mut left = s.len as usize;
        while left > 0 {
            let n = left.min(buf.len());
            std::io::Read::read_exact(&mut spill, &mut buf[..n])?;
            out.write_all(&buf[..n])?;
            left -= n;
        }
    }
    Ok(())
}

fn entry(k: &str, v: &str) -> StringStringEntryProto {
    StringStringEntryProto { key: k.to_owned(), value: v.to_owned() }
}

fn value_info(name: &str, elem: ElemType, dims: &[Dim]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: elem.onnx(),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Dim::Fixed(n) => DimensionValue::DimValue(*n as i64),
                                Dim::Symbolic(s) => DimensionValue::DimParam(s.clone()),
                            }),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

/// Path of the external-data file that goes with a model file (`unet.onnx` → `unet.onnx.data`).
pub fn external_data_path(model: &Path) -> PathBuf {
    let mut s = model.as_os_str().to_owned();
    s.push(".data");
    PathBuf::from(s)
}
