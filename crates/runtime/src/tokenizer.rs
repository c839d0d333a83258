//! The CLIP BPE tokenizer shipped in every artifact (`tokenizer.json`), with the official
//! padding: `[BOS, tokens…, EOS, EOS…]`, truncated to 77 (BOS + 75 tokens + EOS), padded with the
//! end token 49407 (docs/spec.md §6.2, §11.12).

use std::path::Path;

use crate::error::{Error, Result};

/// Token ids per prompt, padding included.
pub(crate) const MAX_LENGTH: usize = 77;
/// CLIP's start-of-text token.
pub(crate) const BOS: i64 = 49406;
/// CLIP's end-of-text token, also the padding.
pub(crate) const EOS: i64 = 49407;

/// CLIP's tokenizer as every artifact ships it.
pub struct ClipTokenizer(tokenizers::Tokenizer);

impl ClipTokenizer {
    /// Reads a `tokenizer.json` (an artifact's is at [`Artifact::tokenizer_path`](crate::Artifact::tokenizer_path)).
    pub fn from_file(path: &Path) -> Result<Self> {
        tokenizers::Tokenizer::from_file(path)
            .map(ClipTokenizer)
            .map_err(|e| Error::Artifact { path: path.to_path_buf(), reason: format!("not a tokenizer.json: {e}") })
    }

    /// Token ids of `prompt`, padded/truncated to 77.
    pub fn encode(&self, prompt: &str) -> Result<Vec<i64>> {
        let enc = self.0.encode(prompt, true).map_err(|e| Error::Input(format!("tokenizing {prompt:?}: {e}")))?;
        let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
        if ids.first() != Some(&BOS) {
            ids.insert(0, BOS);
        }
        if ids.last() != Some(&EOS) {
            ids.push(EOS);
        }
        if ids.len() > MAX_LENGTH {
            ids.truncate(MAX_LENGTH - 1);
            ids.push(EOS);
        }
        ids.resize(MAX_LENGTH, EOS);
        Ok(ids)
    }
}
