//! The artifact manifest (`manifest.json`): the one contract between the builder, which writes
//! it, and the runner, `animate check` and the builder's re-use of a previous artifact, which
//! read it. One serde type serves them all, so a field cannot be written under one name and read
//! under another.
//!
//! `manifest.json` is written with its keys in sorted order (see [`Manifest::to_json`]), so an
//! artifact's bytes do not depend on the order of this file's fields.
//!
//! What version 1 accepts: every manifest a build of version 1 has written. Fields added after
//! its first artifacts (2026-11-25) carry a default, and the UNet's `external_data`, first written
//! as one file name, is read as a list either way. Every other field is required, and
//! `architecture` takes no fields its [`ModelArch`] does not know: a builder that adds one raises
//! [`VERSION`].

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use animatediff_formats::{LoraScaling, ModelArch, MotionVersion};
use onnx_writer::AttentionForm;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::manifest_check::MAX_FRAMES;
use crate::scheduler::SchedulerConfig;
use crate::session::DType;
use crate::tokenizer::{BOS, EOS, MAX_LENGTH};

/// The manifest's `format` tag: what says a directory is an artifact of ours.
pub const FORMAT: &str = "animatediff-onnx artifact";

/// The version of the artifact layout and manifest this crate writes and reads.
pub const VERSION: u32 = 1;

/// The manifest's file name inside an artifact directory.
pub const FILE_NAME: &str = "manifest.json";

/// `manifest.json`, field for field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    #[serde(default = "format_tag")]
    pub format: String,
    /// The layout version ([`VERSION`]).
    pub artifact_version: u32,
    /// The program that wrote the artifact.
    pub tool: Tool,
    /// The files it was built from.
    pub inputs: Inputs,
    /// The model's hyper-parameters, as inferred from its weights (and `arch.json`).
    pub architecture: ModelArch,
    /// Where the architecture came from: the model file, or the `arch.json` given.
    pub architecture_source: PathBuf,
    /// The motion module's version (detected, or as the build was told).
    pub motion_version: MotionVersion,
    /// How the UNet's ResNet GroupNorms group the frames (by motion-module version).
    #[serde(default)]
    pub resnet_groupnorm: ResnetGroupNorm,
    /// The largest frame count the motion module accepts (its positional table).
    pub max_frames: usize,
    /// Whether the UNet takes one text context per frame, `encoder_hidden_states` of batch B·F, as
    /// well as one per video (batch B): prompt travel. The rule is the input's shape, so a run
    /// with one prompt pays nothing for it. Artifacts built before it (issue 19) take one per video.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_frame_context: bool,
    /// The scheduler the motion module was trained and is sampled with.
    pub scheduler: SchedulerConfig,
    /// Weight and compute precision of the text encoder and the UNet.
    pub precision: Precision,
    /// Precision of the VAE decoder.
    #[serde(default)]
    pub vae_precision: Precision,
    /// The ONNX opset of the graphs.
    #[serde(default)]
    pub opset: i64,
    /// The ONNX form of the UNet's and VAE's attentions (artifacts written before it was
    /// recorded were all plain).
    #[serde(default = "plain_attention", with = "as_string")]
    pub attention: AttentionForm,
    /// The three graphs, their files, inputs and outputs.
    pub graphs: Graphs,
    /// The golden bundle, if the build stored one.
    #[serde(default)]
    pub golden: Option<Golden>,
    /// The tokenizer file and its special ids.
    pub tokenizer: TokenizerFile,
    /// SHA-256 (lowercase hex) of every file of the artifact but the manifest, by file name.
    pub files: BTreeMap<String, String>,
    /// The size in bytes of every file of the artifact but the manifest, by file name: checked
    /// on every [`Artifact::open`](crate::Artifact::open), where hashing would take too long.
    /// Artifacts written before it was recorded have none (then only the hashes are checked,
    /// by `animate check`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub file_sizes: BTreeMap<String, u64>,
}

fn format_tag() -> String {
    FORMAT.into()
}

fn plain_attention() -> AttentionForm {
    AttentionForm::Plain
}

/// The program that wrote an artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// `build-graph`.
    pub name: String,
    /// Its crate version.
    pub version: String,
    /// The executable's size and time: a rebuild re-uses weights only when the program that
    /// wrote them is this very build of it (a version number does not change with every code
    /// change). `None` when it could not be read.
    #[serde(default)]
    pub executable: Option<ExecutableStamp>,
}

/// Size and modification time of an executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutableStamp {
    /// Bytes.
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

/// The files an artifact was built from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    /// The base model, as given.
    pub base: Option<PathBuf>,
    /// The personalised checkpoint, as given.
    pub personalized: Option<PathBuf>,
    /// Which files each component was read from (the personalised checkpoint replaces the
    /// components it has).
    pub components: ComponentFiles,
    /// The motion module.
    pub motion_module: MotionModuleInput,
    /// The LoRAs merged into the weights, in order.
    pub loras: Vec<LoraInput>,
    /// How their `alpha` was applied.
    pub lora_scaling: LoraScaling,
    /// The `arch.json` that overrode inferred architecture fields, if one did.
    pub arch_json: Option<InputFile>,
    /// Warnings about checkpoint keys that match no known layout (and were not used).
    pub unrecognized_keys: Vec<String>,
    /// The textual-inversion embeddings baked into the text encoder's token table, in the order
    /// given (their vectors' ids follow one another from the vocabulary's size on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embeddings: Vec<EmbeddingInput>,
}

/// A textual-inversion embedding baked into an artifact: its file, the trigger word the
/// tokenizer replaces by its vectors, and where those vectors are in the token table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingInput {
    /// The file.
    #[serde(flatten)]
    pub file: InputFile,
    /// The trigger word (the file stem unless the build was given one), matched
    /// case-insensitively by its tokens.
    pub token: String,
    /// The file's format, as the reader named it.
    pub format: String,
    /// Its vectors (1 to 75).
    pub vectors: usize,
    /// The id of its first vector in the text encoder's token table.
    pub first_id: i64,
}

/// The files of each model component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentFiles {
    /// The UNet's files.
    pub unet: Vec<InputFile>,
    /// The VAE's files.
    pub vae: Vec<InputFile>,
    /// The text encoder's files.
    pub text_encoder: Vec<InputFile>,
}

/// One input file: its path and SHA-256, and its size and modification time when they could be
/// read, so that a rebuild need not hash a file whose size and time are unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// The path as given to the build.
    pub path: PathBuf,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Bytes, when they could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Modification time in nanoseconds since the Unix epoch, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<u64>,
}

impl InputFile {
    /// `path` with its hash, and its size and time as the file system says now.
    pub fn new(path: &Path, sha256: impl Into<String>) -> Self {
        let stamp = file_stamp(path);
        Self { path: path.to_path_buf(), sha256: sha256.into(), size: stamp.map(|s| s.0), mtime_ns: stamp.map(|s| s.1) }
    }

    /// Whether the file's size and time are still those recorded (then its hash is too).
    pub fn unchanged(&self) -> bool {
        self.size.is_some() && self.mtime_ns.is_some() && file_stamp(&self.path) == self.size.zip(self.mtime_ns)
    }
}

/// Size and modification time (ns since the epoch) of a file.
pub fn file_stamp(path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    let t = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some((m.len(), u64::try_from(t.as_nanos()).ok()?))
}

/// The motion module an artifact was built with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MotionModuleInput {
    /// The file.
    #[serde(flatten)]
    pub file: InputFile,
    /// The version built with (detected, or as overridden).
    pub version: MotionVersion,
    /// The version detected from keys and shapes, if one was.
    pub detected_version: Option<MotionVersion>,
    /// Key layout: `Official` (guoyww/AnimateDiff) or `Diffusers` (MotionAdapter).
    pub layout: String,
    /// Whether it has a mid-block module (v2, v3).
    pub mid_block: bool,
    /// The length of its positional table.
    pub max_frames: usize,
}

/// A LoRA merged into an artifact's weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraInput {
    /// The file.
    #[serde(flatten)]
    pub file: InputFile,
    /// Its multiplier, as the shortest decimal of the f32 given.
    pub multiplier: f64,
    /// Key format (`Kohya`, `Diffusers`, ...).
    pub format: String,
    /// Its LoRA modules.
    pub modules: usize,
    /// How many of them matched a weight of the model.
    pub matched: usize,
    /// Its keys that matched no weight (only when those were allowed).
    pub unmatched_keys: Vec<String>,
}

/// How the UNet's ResNet GroupNorms group the frames: per frame (v2, v3) or across all frames
/// of a video (v1's `use_inflated_groupnorm = false`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResnetGroupNorm {
    /// One group-norm per frame (v2, v3).
    #[default]
    PerFrame,
    /// One over all frames of a video (v1).
    AcrossFrames,
}

impl ResnetGroupNorm {
    /// How a motion module of `version` groups the frames.
    pub fn of(version: MotionVersion) -> Self {
        if version.per_frame_resnet_groupnorm() {
            ResnetGroupNorm::PerFrame
        } else {
            ResnetGroupNorm::AcrossFrames
        }
    }
}

impl Display for ResnetGroupNorm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResnetGroupNorm::PerFrame => "per_frame",
            ResnetGroupNorm::AcrossFrames => "across_frames",
        })
    }
}

/// Weight and compute precision of a graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    Fp32,
    /// 16-bit floats for weights and compute; norms' statistics and softmax stay f32.
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

impl Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
        })
    }
}

/// The three graphs of an artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graphs {
    /// `input_ids` → `last_hidden_state`.
    pub text_encoder: GraphFile,
    /// `sample`, `timestep`, `encoder_hidden_states` → `noise_pred`.
    pub unet: GraphFile,
    /// `latent_sample` → `sample`.
    pub vae_decoder: GraphFile,
}

impl Graphs {
    /// The graphs with their names, in the order they run.
    pub fn iter(&self) -> [(&'static str, &GraphFile); 3] {
        [("text_encoder", &self.text_encoder), ("unet", &self.unet), ("vae_decoder", &self.vae_decoder)]
    }

    /// The graph named `name` (`text_encoder`, `unet` or `vae_decoder`).
    pub fn get(&self, name: &str) -> Option<&GraphFile> {
        self.iter().into_iter().find(|(n, _)| *n == name).map(|(_, g)| g)
    }
}

/// One ONNX graph file and its inputs and outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphFile {
    /// The `.onnx` file's name.
    pub file: String,
    /// Its external-data files (the UNet's weights).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "one_or_many")]
    pub external_data: Option<Vec<String>>,
    /// Those of its external-data files that hold weights a LoRA changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_dependent_data: Option<Vec<String>>,
    /// Its inputs, in order.
    pub inputs: Vec<TensorSpec>,
    /// Its outputs, in order.
    pub outputs: Vec<TensorSpec>,
}

/// A graph input or output: name, element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// The graph's name for it.
    pub name: String,
    /// Its element type.
    pub dtype: DType,
    /// Its dimensions.
    pub shape: Vec<Dim>,
}

impl TensorSpec {
    /// A spec from its parts.
    pub fn new(name: &str, dtype: DType, shape: Vec<Dim>) -> Self {
        Self { name: name.to_owned(), dtype, shape }
    }
}

/// One dimension of a graph input or output: fixed, or symbolic with a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A size the graph was built for.
    Fixed(usize),
    /// A symbolic dimension, by name (`batch`, `frames`, ...).
    Named(String),
}

impl Dim {
    /// `Fixed(n)` if the size is known, else the symbolic dimension `name`.
    pub fn fixed_or(size: Option<usize>, name: &str) -> Self {
        size.map(Dim::Fixed).unwrap_or_else(|| Dim::Named(name.to_owned()))
    }

    /// The size, if fixed.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Named(_) => None,
        }
    }
}

/// The golden bundle: seeded small inputs and one runtime's outputs for them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Golden {
    /// The `.npz` file's name.
    pub file: String,
    /// The runtime that computed the outputs.
    pub runtime: String,
    /// The UNet input's frame count.
    pub frames: usize,
    /// The latent height of the UNet's and VAE's inputs.
    pub latent_height: usize,
    /// The latent width.
    pub latent_width: usize,
    /// How its arrays are named: `<graph>.<input or output name>`.
    pub arrays: String,
}

/// The CLIP tokenizer file and the ids and length the text encoder was built for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerFile {
    /// The tokenizer's file name (Hugging Face `tokenizers` JSON).
    pub file: String,
    /// The id prompts are padded with.
    pub pad_token_id: i64,
    /// The start-of-text id.
    pub bos_token_id: i64,
    /// The end-of-text id.
    pub eos_token_id: i64,
    /// Token ids per prompt, after padding or truncation.
    pub max_length: usize,
}

impl TokenizerFile {
    /// SD1.5's CLIP tokenizer: pad with EOS to 77 tokens.
    pub fn clip(file: &str) -> Self {
        Self { file: file.to_owned(), pad_token_id: EOS, bos_token_id: BOS, eos_token_id: EOS, max_length: MAX_LENGTH }
    }
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON.
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    /// Another format tag.
    #[error("not an animatediff-onnx artifact manifest (format {0:?})")]
    NotOurs(Option<String>),
    /// Another version, or none.
    #[error("artifact version {found} is not supported (this program reads version {VERSION}); rebuild the model with the matching build-graph")]
    Version {
        /// The version found, or `<missing>`.
        found: String,
    },
    /// A field missing or of the wrong type.
    #[error("{0}")]
    Field(serde_json::Error),
    /// A field whose value is out of range, inconsistent with another, or a file name that
    /// leaves the artifact directory.
    #[error("{0}")]
    Invalid(InvalidField),
}

/// A manifest field whose value is not accepted, with what is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidField {
    /// The field's path in `manifest.json` (`scheduler.steps_offset`, `graphs.unet.file`).
    pub field: String,
    /// The value found, as written.
    pub value: String,
    /// What is accepted instead (a range, a list, a rule).
    pub expected: String,
}

impl InvalidField {
    /// A fault of `field`.
    pub fn new(field: &str, value: impl Into<String>, expected: impl Into<String>) -> Self {
        Self { field: field.to_owned(), value: value.into(), expected: expected.into() }
    }
}

impl Display for InvalidField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}` is {}: expected {}", self.field, self.value, self.expected)
    }
}

impl Manifest {
    /// Parses `manifest.json`. The format tag and the version are checked before the fields, so
    /// a manifest of another version says so rather than naming a field it lacks.
    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(ManifestError::Json)?;
        let format = v.get("format").and_then(|f| f.as_str());
        // manifests written before the format tag existed have none; the version decides
        if format.is_some_and(|f| f != FORMAT) {
            return Err(ManifestError::NotOurs(format.map(str::to_owned)));
        }
        match v.get("artifact_version").and_then(|x| x.as_u64()) {
            Some(n) if n == u64::from(VERSION) => {}
            other => {
                let found = other.map(|n| n.to_string()).unwrap_or_else(|| "<missing>".into());
                return Err(ManifestError::Version { found });
            }
        }
        serde_json::from_value(v).map_err(ManifestError::Field)
    }

    /// Checks what parsing cannot, without reading any file: every file name is a plain name
    /// inside the artifact directory, and every number is in the range the runner accepts and
    /// consistent with the others: sizes positive and bounded (e.g. `max_frames` ≤ [`MAX_FRAMES`]),
    /// the scheduler one the samplers support, token ids inside the vocabulary, the
    /// graphs' fixed input sizes equal to the architecture's. [`Artifact::open`](crate::Artifact::open)
    /// calls it; it never panics, whatever the manifest holds.
    pub fn validate(&self) -> Result<(), ManifestError> {
        crate::manifest_check::validate(self).map_err(ManifestError::Invalid)
    }

    /// Every file name the manifest gives, with the field that gives it.
    pub fn file_names(&self) -> Vec<(String, &str)> {
        let mut names = Vec::new();
        for (graph, g) in self.graphs.iter() {
            names.push((format!("graphs.{graph}.file"), g.file.as_str()));
            for (key, list) in [("external_data", &g.external_data), ("lora_dependent_data", &g.lora_dependent_data)] {
                for (i, n) in list.iter().flatten().enumerate() {
                    names.push((format!("graphs.{graph}.{key}[{i}]"), n.as_str()));
                }
            }
        }
        names.extend(self.golden.as_ref().map(|g| ("golden.file".to_owned(), g.file.as_str())));
        names.push(("tokenizer.file".into(), self.tokenizer.file.as_str()));
        names.extend(self.files.keys().map(|n| ("files".to_owned(), n.as_str())));
        names.extend(self.file_sizes.keys().map(|n| ("file_sizes".to_owned(), n.as_str())));
        names
    }

    /// The manifest as written: pretty JSON with sorted keys and a final newline.
    pub fn to_json(&self) -> String {
        // serde_json's map sorts its keys: the file's bytes follow from its content alone
        let v = serde_json::to_value(self).expect("a manifest always serialises");
        serde_json::to_string_pretty(&v).expect("a JSON value always prints") + "\n"
    }

    /// Rows of the text encoder's token table: the vocabulary, then every embedding's vectors.
    pub fn token_table_len(&self) -> usize {
        self.architecture.text_encoder.vocab_size + self.inputs.embeddings.iter().map(|e| e.vectors).sum::<usize>()
    }

    /// The precision `graph` computes in: the VAE decoder at `vae_precision`, the others at
    /// `precision`.
    pub fn precision_of(&self, graph: &str) -> Precision {
        if graph == "vae_decoder" {
            self.vae_precision
        } else {
            self.precision
        }
    }
}

/// A list of file names, or one name as the first version-1 artifacts wrote `external_data`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(name) => vec![name],
        OneOrMany::Many(names) => names,
    }))
}

/// Serde through `Display` and `FromStr`, for types of crates without serde.
mod as_string {
    use super::*;

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = include_str!("../../../graphs/micro_v2/manifest.json");

    #[test]
    fn the_committed_manifest_reads_and_writes_back_byte_for_byte() {
        let m = Manifest::from_json(COMMITTED).unwrap();
        assert_eq!(m.motion_version, MotionVersion::V2);
        assert_eq!(m.graphs.unet.inputs[0].shape[2], Dim::Named("frames".into()));
        assert_eq!(m.to_json(), COMMITTED);
    }

    #[test]
    fn other_versions_and_formats_are_refused_by_name() {
        let v2 = COMMITTED.replace("\"artifact_version\": 1,", "\"artifact_version\": 2,");
        let e = Manifest::from_json(&v2).unwrap_err().to_string();
        assert!(e.contains("artifact version 2 is not supported") && e.contains("version 1"), "{e}");
        let other = COMMITTED.replace("animatediff-onnx artifact", "something else");
        assert!(Manifest::from_json(&other).unwrap_err().to_string().contains("\"something else\""));
        let e = Manifest::from_json("{\"artifact_version\": 1}").unwrap_err().to_string();
        assert!(e.contains("missing field"), "{e}");
    }

    #[test]
    fn fields_added_to_version_1_later_have_defaults() {
        let mut v: serde_json::Value = serde_json::from_str(COMMITTED).unwrap();
        let m = v.as_object_mut().unwrap();
        for k in ["attention", "golden", "vae_precision", "opset", "resnet_groupnorm"] {
            m.remove(k);
        }
        m["tool"].as_object_mut().unwrap().remove("executable");
        m["graphs"]["unet"]["external_data"] = "unet.onnx.data".into();
        m.remove("format");
        let old = Manifest::from_json(&v.to_string()).unwrap();
        assert_eq!(old.graphs.unet.external_data, Some(vec!["unet.onnx.data".to_owned()]));
        assert_eq!(old.format, FORMAT);
        assert_eq!(old.attention, AttentionForm::Plain);
        assert_eq!((old.vae_precision, old.golden, old.tool.executable), (Precision::Fp32, None, None));
    }
}
