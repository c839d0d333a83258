//! A1111's attention grammar: `(text)` ×1.1, `[text]` ÷1.1, `(text:w)` ×w, nesting multiplies,
//! `\(` `\)` `\[` `\]` `\\` are literal brackets and backslash, and `BREAK` starts a new chunk.
//!
//! The behaviour is that of AUTOMATIC1111's `modules/prompt_parser.py` (`parse_prompt_attention`,
//! stable-diffusion-webui 1.10), written here from its documented rules and checked against an
//! independent Python implementation (`tools/reference/prompt_goldens.py`):
//!
//! - The text is cut into tokens, trying at each position, in this order: an escape (`\(`, `\)`,
//!   `\[`, `\]`, `\\`, or a lone `\`, which is dropped), `(`, `[`, a weight closer
//!   `:` + spaces + `[+-]?[.0-9]+` + spaces + `)`, `)`, `]`, a run of text without `\()[]:`, and a
//!   lone `:` (literal).
//! - `(` and `[` push the position of the next segment; a closer multiplies every segment from its
//!   opener's position to the end by 1.1, its weight, or 1/1.1. A closer with no opener of its
//!   kind is literal text (a weight closer with no `(` too: `:1.5)`).
//! - Unclosed `(`, then unclosed `[`, apply their multipliers at the end, outermost first.
//! - Every text run is split at `\s*\bBREAK\b\s*`; each `BREAK` leaves a marker segment of weight
//!   −1, which the brackets around it multiply like any segment: inside brackets its weight is no
//!   longer −1, and it is then the literal text `BREAK` with that weight.
//! - Neighbouring segments of equal weight are merged; an empty result is one empty segment.
//!
//! Weights are kept in `f64`, as Python's floats, so that equal weights merge exactly as A1111's.

use std::fmt;

/// A weight closer that is not a number (`(a:1.2.3)`, `(a:.)`): A1111 stops with a Python
/// `ValueError` there; we say where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightError {
    /// The text of the weight as written.
    pub weight: String,
    /// Its byte offset in the prompt.
    pub at: usize,
}

impl fmt::Display for WeightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the weight {:?} at byte {} is not a number (write a weight as (text:1.2), (text:.5) or (text:-1); escape a literal bracket as \\( or \\))",
            self.weight, self.at
        )
    }
}

impl std::error::Error for WeightError {}

/// One stretch of prompt text and its weight, or a chunk break.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// The text (for a break marker, `BREAK`).
    pub text: String,
    /// Its emphasis; −1 exactly marks a break.
    pub weight: f64,
}

impl Segment {
    /// Whether this is a `BREAK` outside brackets: a new chunk starts here.
    pub fn is_break(&self) -> bool {
        self.weight == BREAK_WEIGHT && self.text == "BREAK"
    }
}

const BREAK_WEIGHT: f64 = -1.0;
const ROUND: f64 = 1.1;
const SQUARE: f64 = 1.0 / 1.1;

/// Python's `\s` on `str` (Unicode whitespace, with the four ASCII separators it adds).
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `\w` on `str`: alphanumeric or `_`.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// At `s`: `:` + spaces + `[+-]?[.0-9]+` + spaces + `)`; returns the number's text and the
/// length matched.
fn weight_closer(s: &str) -> Option<(&str, usize)> {
    let rest = s.strip_prefix(':')?;
    let after_space = rest.trim_start_matches(is_space);
    let start = s.len() - after_space.len();
    let mut end = start;
    let b = s.as_bytes();
    if end < b.len() && (b[end] == b'+' || b[end] == b'-') {
        end += 1;
    }
    let digits = end;
    while end < b.len() && (b[end] == b'.' || b[end].is_ascii_digit()) {
        end += 1;
    }
    if end == digits {
        return None;
    }
    let number = &s[start..end];
    let tail = s[end..].trim_start_matches(is_space);
    tail.strip_prefix(')').map(|t| (number, s.len() - t.len()))
}

/// Splits a text run at every `\s*\bBREAK\b\s*` (Python's `re.split`).
fn split_breaks(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut last = 0;
    let mut i = 0;
    while i < text.len() {
        let from_space = &text[i..];
        let word = from_space.trim_start_matches(is_space);
        let k = text.len() - word.len();
        let before_ok = text[..k].chars().next_back().is_none_or(|c| !is_word(c));
        let after_ok = word.strip_prefix("BREAK").is_some_and(|r| r.chars().next().is_none_or(|c| !is_word(c)));
        if before_ok && after_ok {
            let end = k + "BREAK".len();
            let end = text.len() - text[end..].trim_start_matches(is_space).len();
            parts.push(&text[last..i]);
            last = end;
            i = end;
            continue;
        }
        i += text[i..].chars().next().map_or(1, char::len_utf8);
    }
    parts.push(&text[last..]);
    parts
}

/// `prompt` as weighted segments, as A1111's `parse_prompt_attention` reads it (see the module).
pub fn parse_attention(prompt: &str) -> Result<Vec<Segment>, WeightError> {
    let mut res: Vec<Segment> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<Segment>, from: usize, m: f64| res[from..].iter_mut().for_each(|s| s.weight *= m);
    let text = |res: &mut Vec<Segment>, t: &str| res.push(Segment { text: t.to_owned(), weight: 1.0 });
    let mut i = 0;
    while i < prompt.len() {
        let s = &prompt[i..];
        let c = s.chars().next().expect("i is below the length, on a char boundary");
        if c == '\\' {
            // `\(`, `\)`, `\[`, `\]`, `\\` keep the second character; a lone `\` is dropped
            match s[1..].chars().next() {
                Some(e @ ('(' | ')' | '[' | ']' | '\\')) => {
                    text(&mut res, &e.to_string());
                    i += 2;
                }
                _ => {
                    text(&mut res, "");
                    i += 1;
                }
            }
            continue;
        }
        match c {
            '(' => {
                round.push(res.len());
                i += 1;
            }
            '[' => {
                square.push(res.len());
                i += 1;
            }
            ':' => match weight_closer(s) {
                Some((w, len)) if !round.is_empty() => {
                    // A1111 takes an overflowing weight as infinity, which fills the context with
                    // NaN; a weight must be a finite number here
                    let weight: f64 = w.parse().ok().filter(|w: &f64| w.is_finite()).ok_or_else(|| WeightError { weight: w.to_owned(), at: i })?;
                    let from = round.pop().expect("checked non-empty");
                    multiply(&mut res, from, weight);
                    i += len;
                }
                _ => {
                    // a weight closer without `(`: text, as A1111's last alternative reads it
                    let (len, t) = match weight_closer(s) {
                        Some((_, len)) => (len, &s[..len]),
                        None => (1, ":"),
                    };
                    push_text(&mut res, t);
                    i += len;
                }
            },
            ')' if !round.is_empty() => {
                let from = round.pop().expect("checked non-empty");
                multiply(&mut res, from, ROUND);
                i += 1;
            }
            ']' if !square.is_empty() => {
                let from = square.pop().expect("checked non-empty");
                multiply(&mut res, from, SQUARE);
                i += 1;
            }
            ')' | ']' => {
                push_text(&mut res, &s[..1]);
                i += 1;
            }
            _ => {
                let len = s.find(['\\', '(', ')', '[', ']', ':']).unwrap_or(s.len());
                push_text(&mut res, &s[..len]);
                i += len;
            }
        }
    }
    for from in round {
        multiply(&mut res, from, ROUND);
    }
    for from in square {
        multiply(&mut res, from, SQUARE);
    }
    if res.is_empty() {
        res.push(Segment { text: String::new(), weight: 1.0 });
    }
    let mut merged: Vec<Segment> = Vec::with_capacity(res.len());
    for s in res {
        match merged.last_mut() {
            Some(last) if last.weight == s.weight => last.text.push_str(&s.text),
            _ => merged.push(s),
        }
    }
    Ok(merged)
}

/// A run of plain text: its parts between `BREAK`s, with a break marker between each two.
fn push_text(res: &mut Vec<Segment>, t: &str) {
    for (k, part) in split_breaks(t).into_iter().enumerate() {
        if k > 0 {
            res.push(Segment { text: "BREAK".into(), weight: BREAK_WEIGHT });
        }
        res.push(Segment { text: part.to_owned(), weight: 1.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<(String, f64)> {
        parse_attention(s).unwrap().into_iter().map(|s| (s.text, s.weight)).collect()
    }

    fn v(items: &[(&str, f64)]) -> Vec<(String, f64)> {
        items.iter().map(|(t, w)| (t.to_string(), *w)).collect()
    }

    #[test]
    fn the_documented_examples() {
        // the examples of A1111's docstring
        assert_eq!(p("normal text"), v(&[("normal text", 1.0)]));
        assert_eq!(p("an (important) word"), v(&[("an ", 1.0), ("important", 1.1), (" word", 1.0)]));
        assert_eq!(p("(unbalanced"), v(&[("unbalanced", 1.1)]));
        assert_eq!(p("\\(literal\\]"), v(&[("(literal]", 1.0)]));
        assert_eq!(p("(unnecessary)(parens)"), v(&[("unnecessaryparens", 1.1)]));
        // A1111's docstring example, with the numbers Python prints
        assert_eq!(
            p("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).") ,
            v(&[
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ])
        );
    }

    #[test]
    fn weights_whitespace_signs_and_stray_closers() {
        assert_eq!(p("( a : 1.5 )"), v(&[(" a ", 1.5)]));
        assert_eq!(p("(a:.5)"), v(&[("a", 0.5)]));
        assert_eq!(p("(a:-1)b"), v(&[("a", -1.0), ("b", 1.0)]));
        assert_eq!(p("(a:0)"), v(&[("a", 0.0)]));
        assert_eq!(p("a:1.5) b"), v(&[("a:1.5) b", 1.0)]));
        assert_eq!(p("a) b]"), v(&[("a) b]", 1.0)]));
        assert_eq!(p("[a (b]"), v(&[("a ", 1.0 / 1.1), ("b", 1.0 / 1.1 * 1.1)]));
        assert_eq!(p("a: b"), v(&[("a: b", 1.0)]));
        assert_eq!(p("(a:1e3)"), v(&[("a:1e3", 1.1)]));
        assert_eq!(p("a \\ b \\\\"), v(&[("a  b \\", 1.0)]));
        assert_eq!(p(""), v(&[("", 1.0)]));
        let e = parse_attention("x (a:1.2.3) y").unwrap_err();
        assert_eq!((e.weight.as_str(), e.at), ("1.2.3", 4));
        assert!(parse_attention("(a:.)").is_err());
        assert!(parse_attention(&format!("(a:{})", "9".repeat(400))).is_err(), "infinite");
    }

    #[test]
    fn break_splits_outside_brackets_only() {
        let segs = parse_attention("a BREAK b").unwrap();
        assert_eq!(segs.iter().map(Segment::is_break).collect::<Vec<_>>(), [false, true, false]);
        assert_eq!(p("a  BREAK\tb"), v(&[("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]));
        assert_eq!(p("BREAKFAST break aBREAK"), v(&[("BREAKFAST break aBREAK", 1.0)]));
        assert_eq!(p("a, BREAK, b"), v(&[("a,", 1.0), ("BREAK", -1.0), (", b", 1.0)]));
        assert_eq!(p("BREAK BREAK"), v(&[("", 1.0), ("BREAK", -1.0), ("", 1.0), ("BREAK", -1.0), ("", 1.0)]));
        // inside brackets the marker's weight is multiplied: literal text from then on
        let segs = parse_attention("(a BREAK b)").unwrap();
        assert_eq!(segs.len(), 3);
        assert!(!segs[1].is_break() && segs[1].text == "BREAK" && segs[1].weight == -1.1);
        // (x:1) leaves −1 alone: still a break
        assert!(parse_attention("(a BREAK b:1)").unwrap()[1].is_break());
    }
}
