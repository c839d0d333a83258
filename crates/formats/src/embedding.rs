//! Textual-inversion embeddings: the files users download (CivitAI, Hugging Face concepts) and pass
//! as `build-graph --embedding FILE[:TOKEN]`, read into `n` vectors of the text encoder's width,
//! accepting what A1111 (`textual_inversion.py`, `create_embedding_from_data`) and diffusers
//! (`load_textual_inversion`) accept:
//!
//! | format | holds |
//! |---|---|
//! | A1111 `.pt` | a torch pickle `{"string_to_param": {"*": tensor [n, D]}, "name": ..., ...}`; the tensor is often a `torch.nn.Parameter` |
//! | safetensors | `emb_params` [n, D] (kohya's sd-scripts, A1111) |
//! | SDXL safetensors | `clip_l` [n, 768] and `clip_g` [n, 1280]: `clip_l` is what an SD1.x text encoder reads |
//! | diffusers `learned_embeds.bin` / `.safetensors` | exactly one entry `{token: tensor [D] or [n, D]}` |
//!
//! The container is told from the content (safetensors header or torch zip; a legacy, pre-zip
//! pickle is refused), never from the extension. Pickles go through the restricted unpickler
//! ([`crate::pickle`]): a file whose pickle needs any other Python class, such as the
//! `torch.nn.ParameterDict` the original textual-inversion code saved, is refused by name, as only
//! running code from the file could rebuild it. Shapes are checked before any data is read, so a
//! file never makes this reader allocate more than [`MAX_EMBEDDING_VECTORS`] ×
//! [`MAX_EMBEDDING_WIDTH`] values.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::tensor_file::{ReadLimits, TensorFile};

/// A1111 puts a whole embedding into one 75-token chunk of the prompt: more vectors can never fit.
pub const MAX_EMBEDDING_VECTORS: usize = 75;

/// The widest vectors accepted (SD1.x's text encoder is 768 wide, SD2's 1024, SDXL's second 1280).
pub const MAX_EMBEDDING_WIDTH: usize = 4096;

/// What a torch zip holding an embedding may inflate. A real one's pickle is about a kilobyte and
/// its storages are stored uncompressed (read in place, counting against nothing); a
/// re-compressed storage may hold at most 64 MiB, more than the whole CLIP token table.
const LIMITS: ReadLimits = ReadLimits { pickle_bytes: 16 << 20, inflated_storage_bytes: 64 << 20 };

/// The layout an embedding was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbeddingFormat {
    /// A1111's `.pt`: `string_to_param` = `{"*": tensor}` beside `name`, `step`, ...
    A1111Pt,
    /// `emb_params` (kohya's sd-scripts and A1111 `.safetensors`).
    Safetensors,
    /// An SDXL embedding's `clip_l` (its `clip_g` is for SDXL's second text encoder).
    SdxlClipL,
    /// diffusers' `learned_embeds`: one `{token: tensor}` entry.
    Diffusers,
}

impl fmt::Display for EmbeddingFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmbeddingFormat::A1111Pt => "A1111 .pt (string_to_param)",
            EmbeddingFormat::Safetensors => "safetensors (emb_params)",
            EmbeddingFormat::SdxlClipL => "safetensors (clip_l)",
            EmbeddingFormat::Diffusers => "diffusers learned_embeds",
        })
    }
}

/// A textual-inversion embedding: `vectors` token embeddings of `width` values each.
#[derive(Clone, Debug)]
pub struct Embedding {
    pub format: EmbeddingFormat,
    /// How many token embeddings (n ≥ 1); the token in a prompt stands for all of them.
    pub vectors: usize,
    /// Their width D, which must be the text encoder's ([`Embedding::check_width`]).
    pub width: usize,
    /// n × D, row-major, converted to f32 from the stored f16, bf16, f32 or f64 as torch's
    /// `.float()` converts (f16 and bf16 exactly, f64 rounded to nearest).
    pub data: Vec<f32>,
    /// A1111's `name` entry, or the diffusers entry's key (e.g. `<cat-toy>`); informational only.
    pub name: Option<String>,
}

impl Embedding {
    /// Vector `i` (`i < self.vectors`).
    pub fn vector(&self, i: usize) -> &[f32] {
        &self.data[i * self.width..(i + 1) * self.width]
    }

    /// `Ok` when the vectors are `expected` wide (the text encoder's width), else an error naming
    /// `path`, both widths and, where the width tells, the model family the embedding was made for.
    pub fn check_width(&self, path: &Path, expected: usize) -> Result<()> {
        if self.width == expected {
            return Ok(());
        }
        let family = match (self.width, self.format) {
            (768, EmbeddingFormat::SdxlClipL) => " (the clip_l half of an SDXL embedding)",
            (768, _) => " (an SD1.x embedding)",
            (1024, _) => " (an SD 2.x embedding)",
            (1280, _) => " (an SDXL (clip_g) embedding)",
            _ => "",
        };
        Err(Error::Embedding {
            path: path.to_path_buf(),
            reason: format!(
                "vectors of width {}{family}, but this model's text encoder is {expected} wide",
                self.width
            ),
        })
    }
}

/// Reads a textual-inversion embedding in any of the [`EmbeddingFormat`]s, whatever the file's
/// extension. Every error names the file.
pub fn read_embedding(path: &Path) -> Result<Embedding> {
    let file = TensorFile::open_with(path, &LIMITS).map_err(|e| match e {
        Error::DisallowedGlobal { path, global } => Error::Embedding { path, reason: needs_code(&global) },
        other => other,
    })?;
    let found = locate(&file)?;
    read_vectors(&file, found)
}

/// Why a pickle that asks for `global` is refused, and what the user can do.
fn needs_code(global: &str) -> String {
    let what = if global.ends_with("ParameterDict") {
        " (the class the original textual-inversion code saved `string_to_param` as)"
    } else {
        ""
    };
    format!(
        "its pickle needs the Python global `{global}`{what}: only running code could rebuild the file's \
         contents, and this reader never runs or imports anything. The embedding needs converting to \
         .safetensors (`emb_params` [n, D]) by its author or a conversion tool you trust"
    )
}

/// The tensor an embedding file's vectors are in.
struct Located {
    format: EmbeddingFormat,
    key: String,
    name: Option<String>,
}

const STRING_TO_PARAM: &str = "string_to_param";

/// Finds the embedding tensor the way A1111 does: `string_to_param` first, then (ours, for files
/// A1111 reads as a one-entry dict) `emb_params`, then an SDXL `clip_l`, then a single entry.
fn locate(file: &TensorFile) -> Result<Located> {
    let fail = |reason: String| Error::Embedding { path: file.path().to_path_buf(), reason };
    let tensors: Vec<&str> = file.keys().collect();
    let skipped = file.skipped_entries();
    let in_string_to_param =
        |k: &str| k.strip_prefix(STRING_TO_PARAM).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
    if tensors.iter().copied().chain(skipped.iter().map(String::as_str)).any(in_string_to_param) {
        let params: Vec<&str> =
            tensors.iter().copied().filter(|k| k.len() > STRING_TO_PARAM.len() && in_string_to_param(k)).collect();
        return match params.as_slice() {
            [key] => Ok(Located {
                format: EmbeddingFormat::A1111Pt,
                key: (*key).to_owned(),
                name: file.string_entry("name").map(str::to_owned),
            }),
            [] => Err(fail(format!(
                "`string_to_param` is not a dict holding a tensor ({{\"*\": tensor [n, D]}}, as A1111 saves it); the file \
                 holds {}",
                listing(file)
            ))),
            many => Err(fail(format!(
                "`string_to_param` holds {} tensors ({}{}); an embedding file holds exactly one, as A1111 requires",
                many.len(),
                many[..many.len().min(12)].join(", "),
                if many.len() > 12 { ", ..." } else { "" }
            ))),
        };
    }
    let take = |format, key: &str, name: Option<String>| Ok(Located { format, key: key.to_owned(), name });
    if file.contains("emb_params") {
        return take(EmbeddingFormat::Safetensors, "emb_params", None);
    }
    if file.contains("clip_l") {
        return take(EmbeddingFormat::SdxlClipL, "clip_l", None);
    }
    if let ([key], []) = (tensors.as_slice(), skipped) {
        return take(EmbeddingFormat::Diffusers, key, Some((*key).to_owned()));
    }
    Err(fail(format!(
        "not a textual-inversion embedding: it holds {}; accepted are A1111 .pt (`string_to_param` = {{\"*\": tensor}}), \
         safetensors (`emb_params`), SDXL safetensors (`clip_l`, with `clip_g`) and diffusers learned_embeds \
         (exactly one entry {{token: tensor}})",
        listing(file)
    )))
}

/// The entries of `file`, for a message: tensors with their shapes, then the other entries, at
/// most a dozen named.
fn listing(file: &TensorFile) -> String {
    const SHOWN: usize = 12;
    let mut items: Vec<String> = file
        .keys()
        .map(|k| format!("`{k}` {:?}", file.info(k).map(|i| i.shape.clone()).unwrap_or_default()))
        .chain(file.skipped_entries().iter().map(|k| format!("`{k}` (not a tensor)")))
        .collect();
    if items.is_empty() {
        return "no entries".into();
    }
    let total = items.len();
    if total > SHOWN {
        items.truncate(SHOWN);
        items.push(format!("and {} more", total - SHOWN));
    }
    format!("{total} entries: {}", items.join(", "))
}

/// Reads the located tensor, its shape and dtype checked first.
fn read_vectors(file: &TensorFile, found: Located) -> Result<Embedding> {
    let path = file.path();
    let key = found.key.as_str();
    let fail = |reason: String| Error::Embedding { path: path.to_path_buf(), reason };
    let info = file.info(key).ok_or_else(|| fail(format!("`{key}` is missing")))?;
    if !info.dtype.is_float() {
        return Err(Error::UnsupportedDtype { path: path.to_path_buf(), key: key.to_owned(), dtype: info.dtype.to_string() });
    }
    let (vectors, width) = match info.shape[..] {
        [d] => (1, d),
        [n, d] => (n, d),
        _ => {
            return Err(fail(format!(
                "`{key}` has shape {:?}; an embedding is [n, D] (n vectors of the text encoder's width D) or [D]",
                info.shape
            )))
        }
    };
    if vectors == 0 {
        return Err(fail(format!("`{key}` holds no vectors (shape {:?})", info.shape)));
    }
    if vectors > MAX_EMBEDDING_VECTORS {
        return Err(fail(format!(
            "`{key}` holds {vectors} vectors, more than the {MAX_EMBEDDING_VECTORS} that fit in one 75-token chunk \
             of a prompt (where A1111 puts a whole embedding)"
        )));
    }
    if width == 0 || width > MAX_EMBEDDING_WIDTH {
        return Err(fail(format!(
            "`{key}` has vectors of width {width}; text encoders are 1 to {MAX_EMBEDDING_WIDTH} wide (SD1.x: 768)"
        )));
    }
    let data = file.read_f32(key)?;
    if let Some(at) = data.iter().position(|v| !v.is_finite()) {
        return Err(fail(format!(
            "`{key}` holds {} at index {at} (vector {}, element {}); the file is corrupt",
            data[at],
            at / width,
            at % width
        )));
    }
    Ok(Embedding { format: found.format, vectors, width, data, name: found.name })
}
