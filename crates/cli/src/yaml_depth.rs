//! How deeply a YAML text nests, found in one linear pass before the YAML parser sees it.
//!
//! libyaml (under `serde_yaml_ng`) re-examines every open flow level on each token, so its time
//! grows with the square of the nesting depth: 20 000 levels take seconds, 200 000 minutes. This
//! scanner follows libyaml's own tokenisation rules (token starts, quoted, plain and block scalars,
//! comments, tags, anchors, document markers, block indentation rolled at `-`, `?` and simple
//! keys) far enough to know at every token how many flow collections (`[`, `{`) and block
//! levels are open, and stops at the first token past the limit. Where the rules are not followed
//! exactly (text libyaml refuses anyway), it errs towards counting more levels, not fewer.

/// Where the nesting first went past the limit: 1-based line and column.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooDeep {
    pub line: usize,
    pub column: usize,
}

/// Checks that `text` nests at most `max` levels (flow collections plus block levels).
pub(crate) fn check(text: &str, max: usize) -> Result<(), TooDeep> {
    let b = text.as_bytes();
    let b = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b);
    let mut s = Scanner { b, i: 0, line: 0, col: 0, flow: 0, indents: Vec::new(), key_allowed: true, block_key: None };
    while s.next_token() {
        if s.flow + s.indents.len() > max {
            return Err(TooDeep { line: s.line + 1, column: s.col + 1 });
        }
    }
    Ok(())
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
    /// Column in characters, as libyaml counts.
    col: usize,
    flow: usize,
    /// Columns of the open block collections (libyaml's indent stack).
    indents: Vec<usize>,
    /// libyaml's `simple_key_allowed`.
    key_allowed: bool,
    /// A possible simple key in block context: (line, column, byte index).
    block_key: Option<(usize, usize, usize)>,
}

impl Scanner<'_> {
    fn at(&self, k: usize) -> u8 {
        self.b.get(self.i + k).copied().unwrap_or(0)
    }

    /// Length of the line break at `i + k` (LF, CR, CR LF, NEL, LS, PS), 0 if none.
    fn break_len(&self, k: usize) -> usize {
        match (self.at(k), self.at(k + 1), self.at(k + 2)) {
            (b'\r', b'\n', _) => 2,
            (b'\r' | b'\n', _, _) => 1,
            (0xC2, 0x85, _) => 2,
            (0xE2, 0x80, 0xA8 | 0xA9) => 3,
            _ => 0,
        }
    }

    fn blank(&self, k: usize) -> bool {
        matches!(self.at(k), b' ' | b'\t')
    }

    fn blankz(&self, k: usize) -> bool {
        self.blank(k) || self.break_len(k) > 0 || self.i + k >= self.b.len()
    }

    fn eof(&self) -> bool {
        self.i >= self.b.len()
    }

    /// Moves past one character (a line break counts as one).
    fn advance(&mut self) {
        match self.break_len(0) {
            0 => {
                let c = self.at(0);
                self.i += match c {
                    0xF0..=0xFF => 4,
                    0xE0..=0xEF => 3,
                    0xC0..=0xDF => 2,
                    _ => 1,
                };
                self.col += 1;
            }
            n => {
                self.i += n;
                self.line += 1;
                self.col = 0;
                if self.flow == 0 {
                    self.key_allowed = true;
                }
            }
        }
    }

    fn skip_to_line_end(&mut self) {
        while !self.eof() && self.break_len(0) == 0 {
            self.advance();
        }
    }

    /// libyaml's `scan_to_next_token`: blanks, comments and line breaks.
    fn skip_to_token(&mut self) {
        loop {
            while self.at(0) == b' ' || (self.at(0) == b'\t' && (self.flow > 0 || !self.key_allowed)) {
                self.advance();
            }
            if self.at(0) == b'#' {
                self.skip_to_line_end();
            }
            if self.break_len(0) == 0 {
                return;
            }
            self.advance();
        }
    }

    fn indent(&self) -> isize {
        self.indents.last().map_or(-1, |&c| c as isize)
    }

    fn roll_indent(&mut self, column: usize) {
        if self.flow == 0 && self.indent() < column as isize {
            self.indents.push(column);
        }
    }

    /// A directive or document marker closes every block level (not flow levels).
    fn unroll_all(&mut self) {
        if self.flow == 0 {
            self.indents.clear();
        }
        self.block_key = None;
    }

    fn save_key(&mut self) {
        if self.key_allowed && self.flow == 0 {
            self.block_key = Some((self.line, self.col, self.i));
        }
    }

    fn document_marker(&self) -> bool {
        self.col == 0 && matches!(&self.b[self.i..], [b'-', b'-', b'-', ..] | [b'.', b'.', b'.', ..]) && self.blankz(3)
    }

    /// Scans one token; false at the end of the text.
    fn next_token(&mut self) -> bool {
        self.skip_to_token();
        if self.eof() {
            return false;
        }
        if self.flow == 0 {
            while self.indents.last().is_some_and(|&c| c > self.col) {
                self.indents.pop();
            }
        }
        if let Some((line, _, index)) = self.block_key {
            if line < self.line || index + 1024 < self.i {
                self.block_key = None;
            }
        }
        let c = self.at(0);
        match c {
            b'%' if self.col == 0 => {
                self.unroll_all();
                self.skip_to_line_end();
            }
            _ if self.document_marker() => {
                self.unroll_all();
                self.key_allowed = true;
                (0..3).for_each(|_| self.advance());
            }
            b'[' | b'{' => {
                self.save_key();
                self.flow += 1;
                self.key_allowed = true;
                self.advance();
            }
            b']' | b'}' => {
                self.flow = self.flow.saturating_sub(1);
                self.key_allowed = false;
                self.advance();
            }
            b',' => {
                self.key_allowed = true;
                self.advance();
            }
            b'-' if self.blankz(1) => self.indicator(),
            b'?' if self.flow > 0 || self.blankz(1) => self.indicator(),
            b':' if self.flow > 0 || self.blankz(1) => self.value(),
            b'*' | b'&' => {
                self.save_key();
                self.advance();
                while self.at(0).is_ascii_alphanumeric() || matches!(self.at(0), b'-' | b'_') {
                    self.advance();
                }
                self.key_allowed = false;
            }
            b'!' => self.tag(),
            b'|' | b'>' if self.flow == 0 => self.block_scalar(),
            b'\'' | b'"' => self.quoted(c),
            _ => self.plain(),
        }
        true
    }

    /// `-` or `?` followed by a blank.
    fn indicator(&mut self) {
        self.roll_indent(self.col);
        self.block_key = None;
        self.key_allowed = true;
        self.advance();
    }

    /// `:`: a simple key before it in block context opens a mapping at the key's column.
    fn value(&mut self) {
        if self.flow == 0 {
            if let Some((_, column, _)) = self.block_key.take() {
                self.roll_indent(column);
            } else {
                self.roll_indent(self.col);
            }
        }
        self.key_allowed = self.flow == 0;
        self.advance();
    }

    fn tag(&mut self) {
        self.save_key();
        self.advance();
        if self.at(0) == b'<' {
            while !self.eof() && self.at(0) != b'>' && self.break_len(0) == 0 {
                self.advance();
            }
        }
        while !self.blankz(0) && !matches!(self.at(0), b',' | b'[' | b']' | b'{' | b'}') {
            self.advance();
        }
        self.key_allowed = false;
    }

    /// A single- or double-quoted scalar, over as many lines as it takes.
    fn quoted(&mut self, quote: u8) {
        self.save_key();
        self.advance();
        while !self.eof() {
            match self.at(0) {
                b'\'' if quote == b'\'' && self.at(1) == b'\'' => (0..2).for_each(|_| self.advance()),
                b'\\' if quote == b'"' => (0..2).for_each(|_| self.advance()),
                q if q == quote => {
                    self.advance();
                    break;
                }
                _ => self.advance(),
            }
        }
        self.key_allowed = false;
    }

    /// A literal (`|`) or folded (`>`) block scalar: its header line, then every line that is
    /// blank or indented at least as far as its content.
    fn block_scalar(&mut self) {
        self.block_key = None;
        self.advance();
        let mut explicit = None;
        while matches!(self.at(0), b'+' | b'-' | b'1'..=b'9') {
            if self.at(0).is_ascii_digit() {
                explicit = Some((self.at(0) - b'0') as usize);
            }
            self.advance();
        }
        self.skip_to_line_end();
        let parent = self.indent();
        let mut indent = explicit.map(|d| parent.max(0) as usize + d);
        let mut widest = 0;
        while !self.eof() {
            let (start, line, col) = (self.i, self.line, self.col);
            self.advance(); // the line break
            let mut spaces = 0;
            while self.at(0) == b' ' {
                self.advance();
                spaces += 1;
            }
            let empty = self.eof() || self.break_len(0) > 0;
            if empty {
                widest = widest.max(spaces);
                continue;
            }
            let need = *indent.get_or_insert_with(|| widest.max(spaces).max((parent + 1) as usize).max(1));
            if spaces < need {
                // not part of the scalar: resume token scanning at this line's start
                (self.i, self.line, self.col) = (start, line, col);
                break;
            }
            self.skip_to_line_end();
        }
        self.key_allowed = true;
    }

    /// A plain scalar, ended as libyaml ends it (`: `, ` #`, flow indicators in flow context,
    /// a document marker, or a line indented no further than the enclosing block).
    fn plain(&mut self) {
        self.save_key();
        let indent = self.indent() + 1;
        // whether the last run of white space crossed a line (libyaml's `leading_blanks`)
        let mut leading = false;
        loop {
            if self.document_marker() || self.at(0) == b'#' {
                break;
            }
            while !self.blankz(0) {
                let end_value = self.at(0) == b':' && (self.blankz(1) || (self.flow > 0 && matches!(self.at(1), b',' | b'?' | b'[' | b']' | b'{' | b'}')));
                if end_value || (self.flow > 0 && matches!(self.at(0), b',' | b'[' | b']' | b'{' | b'}')) {
                    break;
                }
                self.advance();
                leading = false;
            }
            if !(self.blank(0) || self.break_len(0) > 0) {
                break;
            }
            while self.blank(0) || self.break_len(0) > 0 {
                leading |= self.break_len(0) > 0;
                self.advance();
            }
            if self.flow == 0 && (self.col as isize) < indent {
                break;
            }
        }
        self.key_allowed = leading;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, max: usize) -> bool {
        check(text, max).is_ok()
    }

    #[test]
    fn real_configs_pass_and_their_depth_is_counted() {
        let official = "- inference_config: \"configs/inference/inference-v3.yaml\"\n  seed: [1, 2]\n  steps: 25\n  prompt:\n    - \"best quality, [masterpiece], 1girl: {smile} # not a comment\"\n  n_prompt:\n    - 'it''s bad, ((worst)), [[low]]'\n  motion_module_lora_configs:\n    - path: x.ckpt\n      alpha: 0.8\n";
        assert!(depth_ok(official, 4));
        assert!(!depth_ok(official, 2));
        let v1 = "ToonYou:\n  path: x\n  prompt:\n    - >-\n      a long prompt\n        [[[[[[[[[[\n\n      on lines\n  seed: -1\n";
        assert!(depth_ok(v1, 3), "block scalar content is text");
        assert!(depth_ok("a: 'x [[[[[[[[ #'\nb: \"\\\" [[[[[[[\"\nc: plain [[[[[[ text\n# [[[[[[[[[[\nd: x #[[[[[[[[\n", 2));
    }

    #[test]
    fn flow_block_and_compact_nesting_are_counted() {
        let n = 40;
        assert!(!depth_ok(&"[".repeat(n), 32));
        assert!(!depth_ok(&"{a: ".repeat(n), 32));
        assert!(!depth_ok(&"- ".repeat(n), 32));
        assert!(!depth_ok(&"? ".repeat(n), 32));
        let block: String = (0..n).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert!(!depth_ok(&block, 32));
        assert!(depth_ok(&"[".repeat(30), 32));
        // text that only looks like a string or comment to a naive scanner
        assert!(!depth_ok(&format!("a: it's\nb: {}", "[".repeat(n)), 32));
        assert!(!depth_ok(&format!("a: x\n  \"y\nb:\n  {}", "- ".repeat(n)), 32));
        assert!(!depth_ok(&format!("[x#y, {}", "[".repeat(n)), 32));
        assert!(!depth_ok(&format!("a: b |\n{}", "- ".repeat(n)), 32));
        let nested_strings: String = (0..n).map(|_| "[ \"\n]]\", ").collect();
        assert!(!depth_ok(&nested_strings, 32));
    }

    #[test]
    fn deep_inputs_are_refused_in_linear_time() {
        let start = std::time::Instant::now();
        for text in ["[".repeat(200_000), "- ".repeat(200_000), "{a: ".repeat(200_000), "[\"x\", ".repeat(200_000)] {
            assert_eq!(check(&text, 32).unwrap_err().line, 1);
        }
        let flat = "- [a, 'b', \"c\"]\n".repeat(200_000);
        assert!(depth_ok(&flat, 32));
        assert!(start.elapsed().as_secs_f64() < 2.0, "{:?}", start.elapsed());
    }
}
