//! Textual-inversion embeddings (`build-graph --embedding FILE[:TOKEN]`): read with the safe
//! readers of the formats crate, checked against the text encoder's width, and laid out as the
//! rows appended to its token table, with what the manifest records of each.

use std::collections::HashMap;

use animatediff_formats::{read_embedding, Embedding};

use crate::error::Error;
use crate::options::EmbeddingSpec;

/// The embeddings of one build, in the order given.
pub(crate) struct Embeddings {
    /// Every vector, `n × D` row-major: the token table's new rows (ids from the vocabulary's size on).
    pub rows: Vec<f32>,
    /// Per embedding: its spec, trigger word, what was read (data dropped) and its first id.
    pub baked: Vec<Baked>,
}

/// One embedding as baked.
pub(crate) struct Baked {
    pub spec: EmbeddingSpec,
    pub trigger: String,
    pub format: String,
    pub vectors: usize,
    pub first_id: i64,
}

/// Reads `specs` for a text encoder `width` wide with a vocabulary of `vocab` tokens. Trigger
/// words must be distinct (ignoring case, as CLIP lowercases) and not blank.
pub(crate) fn read(specs: &[EmbeddingSpec], width: usize, vocab: usize) -> Result<Embeddings, Error> {
    let mut rows = Vec::new();
    let mut baked: Vec<Baked> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut next = vocab as i64;
    for (i, spec) in specs.iter().enumerate() {
        let e: Embedding = read_embedding(&spec.path)?;
        e.check_width(&spec.path, width)?;
        let trigger = spec.trigger();
        let invalid = |reason: String| Error::Embedding { path: spec.path.clone(), reason };
        if trigger.trim().is_empty() || trigger.len() > 255 {
            return Err(invalid(format!("the trigger word {trigger:?} must have 1 to 255 bytes and not be blank (give one as FILE:TOKEN)")));
        }
        if let Some(&j) = seen.get(&trigger.to_lowercase()) {
            return Err(invalid(format!(
                "the trigger word {trigger:?} is also that of {} (trigger words are matched ignoring case; give another as FILE:TOKEN)",
                specs[j].path.display()
            )));
        }
        seen.insert(trigger.to_lowercase(), i);
        rows.extend_from_slice(&e.data);
        baked.push(Baked { spec: spec.clone(), trigger, format: e.format.to_string(), vectors: e.vectors, first_id: next });
        next += e.vectors as i64;
    }
    Ok(Embeddings { rows, baked })
}
