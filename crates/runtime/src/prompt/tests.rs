//! The chunker on a toy tokenizer (one id per whitespace-separated word, `,` its own token), so
//! that every position is known; the real tokenizer and encoder are checked against the Python
//! reference in `tests/prompt_parity.rs`.

use super::*;

const BOS: i64 = 1;
const EOS: i64 = 2;
const COMMA: i64 = 3;
const SPECIALS: Specials = Specials { bos: BOS, eos: EOS, comma: Some(COMMA) };

/// `w<n>` → 100 + n, `,` → COMMA, anything else → 99.
fn toy(text: &str) -> Result<Vec<i64>, PromptError> {
    Ok(text
        .replace(',', " , ")
        .split_whitespace()
        .map(|w| match w {
            "," => COMMA,
            w => w.strip_prefix('w').and_then(|n| n.parse::<i64>().ok()).map_or(99, |n| 100 + n),
        })
        .collect())
}

fn words(range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ")
}

fn run(prompt: &str, triggers: &[Trigger]) -> TokenizedPrompt {
    tokenize(prompt, PromptSyntax::A1111, SPECIALS, triggers, toy).unwrap()
}

/// The prompt tokens of a chunk (between BOS and the first EOS).
fn body(c: &Chunk) -> &[i64] {
    let end = c.ids[1..].iter().position(|&i| i == EOS).map_or(CHUNK_LENGTH - 1, |p| p + 1);
    &c.ids[1..end]
}

#[test]
fn every_chunk_is_bos_75_tokens_eos() {
    let p = run(&words(0..160), &[]);
    assert_eq!(p.chunks.len(), 3);
    assert_eq!(p.token_count, 75 + 75 + 10);
    for c in &p.chunks {
        assert_eq!((c.ids.len(), c.weights.len(), c.ids[0], c.ids[76]), (77, 77, BOS, EOS));
    }
    assert_eq!(body(&p.chunks[0]), (100..175).collect::<Vec<_>>());
    assert_eq!(body(&p.chunks[2]), (250..260).collect::<Vec<_>>());
    assert!(p.chunks[2].ids[11..].iter().all(|&i| i == EOS));
    // exactly 75 tokens: one chunk
    assert_eq!(run(&words(0..75), &[]).chunks.len(), 1);
    assert_eq!(run(&words(0..76), &[]).chunks.len(), 2);
    // the empty prompt is one empty chunk
    let e = run("", &[]);
    assert_eq!((e.chunks, e.token_count), (vec![Chunk::empty(BOS, EOS)], 0));
}

#[test]
fn a_comma_in_the_last_20_tokens_of_a_full_chunk_moves_the_rest_on() {
    // a comma after token 60 (position 60): tokens 61.. move to chunk 2
    let prompt = format!("{}, {}", words(0..60), words(60..100));
    let p = run(&prompt, &[]);
    assert_eq!(body(&p.chunks[0]).len(), 61);
    assert_eq!(body(&p.chunks[0]).last(), Some(&COMMA));
    assert_eq!(body(&p.chunks[1]), (160..200).collect::<Vec<_>>());
    assert_eq!(p.token_count, 75 + 40);
    // a comma 21 tokens from the end: no move
    let prompt = format!("{}, {}", words(0..54), words(54..100));
    assert_eq!(body(&run(&prompt, &[]).chunks[0]).len(), 75);
    // the 76th token a comma: the chunk breaks before it, nothing moves
    let prompt = format!("{}, {}", words(0..75), words(75..80));
    let p = run(&prompt, &[]);
    assert_eq!(body(&p.chunks[0]).len(), 75);
    assert_eq!(body(&p.chunks[1])[0], COMMA);
}

#[test]
fn break_ends_a_chunk_and_weights_follow_their_tokens() {
    let p = run("w1 (w2:1.5) BREAK [w3]", &[]);
    assert_eq!(p.chunks.len(), 2);
    assert_eq!(body(&p.chunks[0]), [101, 102]);
    assert_eq!(&p.chunks[0].weights[..4], [1.0, 1.0, 1.5, 1.0]);
    assert_eq!(p.chunks[1].weights[1], (1.0f64 / 1.1) as f32);
    assert_eq!(p.token_count, 75 + 1);
    // BREAK at the very start gives an empty first chunk, as A1111
    assert_eq!(run("BREAK w1", &[]).chunks.len(), 2);
    // inside brackets it is a word
    let p = run("(w1 BREAK w2)", &[]);
    assert_eq!((p.chunks.len(), body(&p.chunks[0])), (1, &[101, 99, 102][..]));
    assert_eq!(p.chunks[0].weights[2], -1.1f64 as f32);
}

#[test]
fn an_embedding_expands_takes_its_weight_and_moves_whole() {
    let emb = Trigger { word: "easy neg".into(), pattern: vec![99, 107], ids: vec![500, 501, 502] };
    let one = Trigger { word: "easy".into(), pattern: vec![99], ids: vec![600] };
    let p = run("w1 (easy w7:1.2) easy w8", &[emb.clone(), one.clone()]);
    assert_eq!(body(&p.chunks[0]), [101, 500, 501, 502, 600, 108]);
    assert_eq!(&p.chunks[0].weights[1..7], [1.0, 1.2, 1.2, 1.2, 1.0, 1.0]);
    // 73 tokens, then a 3-vector embedding: it does not fit, so it starts chunk 2
    let p = run(&format!("{} easy w7 w1", words(0..73)), std::slice::from_ref(&emb));
    assert_eq!(body(&p.chunks[0]).len(), 73);
    assert_eq!(body(&p.chunks[1]), [500, 501, 502, 101]);
    // plain syntax: expanded, then truncated
    let p = tokenize(&format!("w9 easy w7 {}", words(0..80)), PromptSyntax::Plain, SPECIALS, &[emb], toy).unwrap();
    assert_eq!(p.chunks.len(), 1);
    assert_eq!(body(&p.chunks[0])[..5], [109, 500, 501, 502, 100]);
    assert_eq!((p.token_count, p.truncated), (1 + 3 + 80, 1 + 3 + 80 - 75));
    assert!(p.chunks[0].weights.iter().all(|&w| w == 1.0));
}

#[test]
fn weight_errors_and_runaway_prompts_are_refused() {
    let e = tokenize("(a:1.2.3)", PromptSyntax::A1111, SPECIALS, &[], toy).unwrap_err();
    assert!(e.to_string().contains("\"1.2.3\""), "{e}");
    // brackets are text under plain
    assert!(tokenize("(a:1.2.3)", PromptSyntax::Plain, SPECIALS, &[], toy).is_ok());
    // ten nested (…:1e10): 1e100 is a finite f64 but no f32
    let nested = format!("{}w1{}", "(".repeat(10), ":9999999999)".repeat(10));
    let e = tokenize(&nested, PromptSyntax::A1111, SPECIALS, &[], toy).unwrap_err();
    assert!(matches!(e, PromptError::Overflow { .. }), "{e}");
    let e = tokenize(&words(0..75 * 40), PromptSyntax::A1111, SPECIALS, &[], toy).unwrap_err();
    assert!(matches!(e, PromptError::TooLong { .. }), "{e}");
}

#[test]
fn emphasis_keeps_the_chunk_mean() {
    let mut z: Vec<f32> = (0..77 * 4).map(|i| ((i * 37 % 11) as f32 - 3.0) * 0.25).collect();
    let plain = z.clone();
    let mut weights = vec![1.0; 77];
    emphasize(&mut z, &weights);
    assert_eq!(z, plain);
    weights[3] = 1.5;
    weights[9] = 0.0;
    emphasize(&mut z, &weights);
    let mean = |z: &[f32]| z.iter().map(|&v| v as f64).sum::<f64>() / z.len() as f64;
    assert!((mean(&z) - mean(&plain)).abs() < 1e-6, "{} {}", mean(&z), mean(&plain));
    assert!(z[9 * 4..10 * 4].iter().all(|&v| v == 0.0));
    let ratio = z[0] / plain[0];
    assert!((z[3 * 4] / plain[3 * 4] - 1.5 * ratio).abs() < 1e-5);
}
