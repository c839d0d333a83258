//! Prompts as A1111 and ComfyUI users write them: weights, `BREAK`, prompts over 75 tokens and
//! textual-inversion trigger words, and the emphasis that applies the weights to the text
//! encoder's output (README, "Prompt syntax").
//!
//! A prompt becomes one or more 77-token chunks ([`TokenizedPrompt`]); the text encoder encodes
//! each chunk on its own and the chunks are concatenated along the sequence axis, so the UNet's
//! context is `77 × chunks` tokens long. Under [`PromptSyntax::Plain`], the official AnimateDiff
//! behaviour, a prompt is one chunk: brackets are text and tokens past 75 are dropped.

mod parse;

use std::fmt;
use std::str::FromStr;

pub use parse::{parse_attention, Segment, WeightError};

/// Token ids in one chunk: BOS, 75 tokens, EOS.
pub const CHUNK_LENGTH: usize = 77;
/// Prompt tokens per chunk (A1111's `chunk_length`).
pub const CHUNK_TOKENS: usize = 75;
/// How far back from a full chunk's end a comma moves the rest of the chunk to the next one
/// (A1111's `comma_padding_backtrack` default).
pub const COMMA_BACKTRACK: usize = 20;
/// The most chunks a prompt may have: 75 × 32 = 2400 tokens, far beyond any useful prompt, so
/// that a pasted book cannot make the UNet's context unbounded.
pub const MAX_CHUNKS: usize = 32;

/// How prompt text is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PromptSyntax {
    /// AUTOMATIC1111's: `(word:1.2)` weights, `BREAK`, 75-token chunks (the default).
    #[default]
    A1111,
    /// The official AnimateDiff code's: brackets are text, one chunk, tokens past 75 dropped.
    Plain,
}

impl PromptSyntax {
    /// Both, in the order the CLI lists them.
    pub const ALL: [PromptSyntax; 2] = [PromptSyntax::A1111, PromptSyntax::Plain];
}

impl fmt::Display for PromptSyntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PromptSyntax::A1111 => "a1111",
            PromptSyntax::Plain => "plain",
        })
    }
}

impl FromStr for PromptSyntax {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.to_string() == s.to_ascii_lowercase()).ok_or_else(|| format!("unknown prompt syntax `{s}`: expected a1111 or plain"))
    }
}

/// One 77-token chunk: `BOS, tokens…, EOS, EOS…` and each token's weight (1 for BOS, EOS and
/// padding).
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// 77 token ids (ids at and above the base vocabulary are textual-inversion vectors).
    pub ids: Vec<i64>,
    /// 77 weights.
    pub weights: Vec<f32>,
}

impl Chunk {
    /// The chunk of the empty prompt, which pads the shorter of prompt and negative prompt
    /// (A1111's `pad_cond_uncond`).
    pub fn empty(bos: i64, eos: i64) -> Self {
        Self::wrap(Vec::new(), Vec::new(), bos, eos)
    }

    fn wrap(mut ids: Vec<i64>, mut weights: Vec<f32>, bos: i64, eos: i64) -> Self {
        ids.insert(0, bos);
        weights.insert(0, 1.0);
        ids.resize(CHUNK_LENGTH - 1, eos);
        weights.resize(CHUNK_LENGTH - 1, 1.0);
        ids.push(eos);
        weights.push(1.0);
        Self { ids, weights }
    }
}

/// A prompt as chunks, ready for the text encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizedPrompt {
    /// One or more chunks.
    pub chunks: Vec<Chunk>,
    /// Prompt tokens: as A1111 counts them, 75 per chunk but the last, whose own tokens count
    /// ([`PromptSyntax::A1111`]); all of them, those dropped included ([`PromptSyntax::Plain`]).
    pub token_count: usize,
    /// Tokens dropped past the 75th ([`PromptSyntax::Plain`] only).
    pub truncated: usize,
}

/// A textual-inversion trigger word as the tokenizer finds it: the token ids the word itself
/// tokenizes to (so matching is case-insensitive, as CLIP lowercases), and the ids of the
/// embedding's vectors in the artifact's token table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// The word, as recorded in the manifest.
    pub word: String,
    /// The ids it tokenizes to.
    pub pattern: Vec<i64>,
    /// The vectors' ids, one per vector.
    pub ids: Vec<i64>,
}

/// The longest trigger whose pattern starts at `tokens[at..]`.
fn trigger_at<'t>(triggers: &'t [Trigger], tokens: &[i64], at: usize) -> Option<&'t Trigger> {
    triggers.iter().filter(|t| !t.pattern.is_empty() && tokens[at..].starts_with(&t.pattern)).max_by_key(|t| t.pattern.len())
}

/// Chunks being filled, A1111's `tokenize_line` state.
struct Chunker {
    bos: i64,
    eos: i64,
    chunks: Vec<Chunk>,
    ids: Vec<i64>,
    weights: Vec<f32>,
    last_comma: Option<usize>,
    token_count: usize,
}

impl Chunker {
    fn next_chunk(&mut self, last: bool) -> Result<(), PromptError> {
        self.token_count += if last { self.ids.len() } else { CHUNK_TOKENS };
        let ids = std::mem::take(&mut self.ids);
        let weights = std::mem::take(&mut self.weights);
        self.chunks.push(Chunk::wrap(ids, weights, self.bos, self.eos));
        self.last_comma = None;
        if self.chunks.len() > MAX_CHUNKS {
            return Err(PromptError::TooLong { chunks: self.chunks.len() });
        }
        Ok(())
    }
}

/// What can be wrong with a prompt.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PromptError {
    /// A weight that is not a number.
    #[error("{0}")]
    Weight(#[from] WeightError),
    /// More chunks than [`MAX_CHUNKS`].
    #[error("the prompt needs more than {MAX_CHUNKS} chunks of 75 tokens ({chunks} so far); shorten it")]
    TooLong {
        /// Chunks made when it stopped.
        chunks: usize,
    },
    /// Nested weights whose product is beyond f32's range.
    #[error("the weight of {text:?} is {weight:e}, beyond what a float holds (nested weights multiply)")]
    Overflow {
        /// The text it applies to.
        text: String,
        /// The product of its weights.
        weight: f64,
    },
    /// The tokenizer failed.
    #[error("tokenizing: {0}")]
    Tokenizer(String),
}

/// Special ids and the comma, as the tokenizer knows them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Specials {
    pub bos: i64,
    pub eos: i64,
    /// `,</w>`, where A1111 breaks long chunks; `None` where the vocabulary has no comma.
    pub comma: Option<i64>,
}

/// `prompt` under `syntax`: `tokens` tokenizes a piece of text without special tokens.
pub(crate) fn tokenize(
    prompt: &str,
    syntax: PromptSyntax,
    specials: Specials,
    triggers: &[Trigger],
    mut tokens: impl FnMut(&str) -> Result<Vec<i64>, PromptError>,
) -> Result<TokenizedPrompt, PromptError> {
    match syntax {
        PromptSyntax::Plain => {
            let all = tokens(prompt)?;
            let mut ids = Vec::with_capacity(all.len());
            let mut at = 0;
            while at < all.len() {
                match trigger_at(triggers, &all, at) {
                    Some(t) => {
                        ids.extend_from_slice(&t.ids);
                        at += t.pattern.len();
                    }
                    None => {
                        ids.push(all[at]);
                        at += 1;
                    }
                }
            }
            let token_count = ids.len();
            let truncated = ids.len().saturating_sub(CHUNK_TOKENS);
            ids.truncate(CHUNK_TOKENS);
            let weights = vec![1.0; ids.len()];
            Ok(TokenizedPrompt { chunks: vec![Chunk::wrap(ids, weights, specials.bos, specials.eos)], token_count, truncated })
        }
        PromptSyntax::A1111 => {
            let segments = parse_attention(prompt)?;
            let mut c = Chunker { bos: specials.bos, eos: specials.eos, chunks: Vec::new(), ids: Vec::new(), weights: Vec::new(), last_comma: None, token_count: 0 };
            for segment in &segments {
                if segment.is_break() {
                    c.next_chunk(false)?;
                    continue;
                }
                let weight = segment.weight as f32;
                if !weight.is_finite() {
                    return Err(PromptError::Overflow { text: segment.text.clone(), weight: segment.weight });
                }
                let toks = tokens(&segment.text)?;
                let mut at = 0;
                while at < toks.len() {
                    let token = toks[at];
                    if Some(token) == specials.comma {
                        c.last_comma = Some(c.ids.len());
                    } else if let Some(comma) = c.last_comma.filter(|&k| c.ids.len() == CHUNK_TOKENS && CHUNK_TOKENS - k <= COMMA_BACKTRACK) {
                        // a full chunk and a comma near its end: what follows the comma moves on
                        let moved_ids = c.ids.split_off(comma + 1);
                        let moved_weights = c.weights.split_off(comma + 1);
                        c.next_chunk(false)?;
                        c.ids = moved_ids;
                        c.weights = moved_weights;
                    }
                    if c.ids.len() == CHUNK_TOKENS {
                        c.next_chunk(false)?;
                    }
                    match trigger_at(triggers, &toks, at) {
                        None => {
                            c.ids.push(token);
                            c.weights.push(weight);
                            at += 1;
                        }
                        Some(t) => {
                            // an embedding stays whole: if it does not fit, it starts the next chunk
                            if c.ids.len() + t.ids.len() > CHUNK_TOKENS {
                                c.next_chunk(false)?;
                            }
                            c.ids.extend_from_slice(&t.ids);
                            c.weights.extend(std::iter::repeat_n(weight, t.ids.len()));
                            at += t.pattern.len();
                        }
                    }
                }
            }
            if !c.ids.is_empty() || c.chunks.is_empty() {
                c.next_chunk(true)?;
            }
            Ok(TokenizedPrompt { chunks: c.chunks, token_count: c.token_count, truncated: 0 })
        }
    }
}

/// A1111's emphasis on one chunk's encoding `z` (77 × D): every token's vector times its weight,
/// then the whole chunk rescaled so that its mean is the mean before weighting. Float32 as A1111
/// computes it (the means accumulate in f64 here; torch's float32 sum differs by ~1e-7). Where the
/// weighted mean is exactly 0 the rescale is skipped (A1111 would divide by it and fill the
/// context with NaN).
pub fn emphasize(z: &mut [f32], weights: &[f32]) {
    if weights.iter().all(|&w| w == 1.0) {
        return; // exact: A1111's rescale is then by 1
    }
    let d = z.len() / weights.len();
    let mean = |z: &[f32]| (z.iter().map(|&v| v as f64).sum::<f64>() / z.len() as f64) as f32;
    let before = mean(z);
    for (row, &w) in z.chunks_mut(d).zip(weights) {
        row.iter_mut().for_each(|v| *v *= w);
    }
    let after = mean(z);
    let scale = before / after;
    // a weighted mean of exactly 0 would make A1111's scale infinite and the context NaN
    if scale.is_finite() {
        z.iter_mut().for_each(|v| *v *= scale);
    }
}

#[cfg(test)]
mod tests;
