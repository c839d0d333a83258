//! The CLIP BPE tokenizer shipped in every artifact (`tokenizer.json`), with the official
//! padding: `[BOS, tokens…, EOS, EOS…]`, 77 ids per chunk (BOS + 75 tokens + EOS), padded with the
//! end token 49407 (docs/spec.md §6.2, §11.12), and the artifact's textual-inversion trigger words.
//! How prompt text becomes chunks is [`crate::prompt`]'s.

use std::path::Path;

use crate::error::{Error, Result};
use crate::prompt::{self, PromptError, PromptSyntax, Specials, TokenizedPrompt, Trigger};

/// Token ids per prompt chunk, padding included.
pub(crate) const MAX_LENGTH: usize = prompt::CHUNK_LENGTH;
/// CLIP's start-of-text token.
pub(crate) const BOS: i64 = 49406;
/// CLIP's end-of-text token, also the padding.
pub(crate) const EOS: i64 = 49407;

/// CLIP's tokenizer as every artifact ships it, with the artifact's trigger words.
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    triggers: Vec<Trigger>,
    comma: Option<i64>,
}

impl ClipTokenizer {
    /// Reads a `tokenizer.json` (an artifact's is at [`Artifact::tokenizer_path`](crate::Artifact::tokenizer_path)),
    /// with no trigger words ([`for_artifact`](Self::for_artifact) adds an artifact's).
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Artifact { path: path.to_path_buf(), reason: format!("not a tokenizer.json: {e}") })?;
        // A1111 breaks long chunks after `,</w>`
        let comma = inner.token_to_id(",</w>").map(i64::from);
        Ok(Self { inner, triggers: Vec::new(), comma })
    }

    /// The artifact's tokenizer with the trigger words of its textual-inversion embeddings.
    pub fn for_artifact(artifact: &crate::Artifact) -> Result<Self> {
        let path = artifact.tokenizer_path();
        let mut t = Self::from_file(&path)?;
        for e in &artifact.manifest.inputs.embeddings {
            t.add_trigger(&e.token, e.first_id..e.first_id + e.vectors as i64).map_err(|reason| Error::Artifact {
                path: artifact.dir.join(crate::manifest::FILE_NAME),
                reason: format!("embedding {}: {reason}", e.file.path.display()),
            })?;
        }
        Ok(t)
    }

    /// Teaches the tokenizer a trigger word: where its tokens appear in a prompt, the ids `ids`
    /// (an embedding's vectors in the text encoder's table) take their place.
    pub fn add_trigger(&mut self, word: &str, ids: std::ops::Range<i64>) -> std::result::Result<(), String> {
        let pattern = self.tokens(word).map_err(|e| e.to_string())?;
        if pattern.is_empty() || ids.is_empty() {
            return Err(format!("the trigger word {word:?} tokenizes to nothing, or has no vectors"));
        }
        self.triggers.push(Trigger { word: word.to_owned(), pattern, ids: ids.collect() });
        Ok(())
    }

    /// The text of token `id` as the vocabulary writes it (`</w>` ends a word), or the trigger
    /// word and vector number of an embedding's vector (`easyneg#1`).
    pub fn token_text(&self, id: i64) -> Option<String> {
        if let Some(t) = self.triggers.iter().find(|t| t.ids.contains(&id)) {
            return Some(format!("{}#{}", t.word, id - t.ids[0]));
        }
        u32::try_from(id).ok().and_then(|id| self.inner.id_to_token(id))
    }

    /// Token ids of `text`, no special tokens, no length limit.
    fn tokens(&self, text: &str) -> std::result::Result<Vec<i64>, PromptError> {
        let enc = self.inner.encode(text, false).map_err(|e| PromptError::Tokenizer(format!("{text:?}: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// `prompt` as 77-token chunks under `syntax` (see [`crate::prompt`]).
    pub fn tokenize(&self, prompt: &str, syntax: PromptSyntax) -> Result<TokenizedPrompt> {
        let specials = Specials { bos: BOS, eos: EOS, comma: self.comma };
        prompt::tokenize(prompt, syntax, specials, &self.triggers, |t| self.tokens(t))
            .map_err(|e| Error::Input(format!("prompt {:?}: {e}", shorten(prompt))))
    }

    /// Token ids of `prompt` as the official code has them: one chunk, padded or truncated to 77
    /// ([`PromptSyntax::Plain`]).
    pub fn encode(&self, prompt: &str) -> Result<Vec<i64>> {
        let mut p = self.tokenize(prompt, PromptSyntax::Plain)?;
        Ok(p.chunks.swap_remove(0).ids)
    }
}

/// The first 60 characters of a prompt, for an error message.
fn shorten(prompt: &str) -> String {
    match prompt.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &prompt[..at]),
        None => prompt.to_owned(),
    }
}
