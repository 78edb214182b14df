//! k-shot prompts and their answer positions.
//!
//! A prompt is `"{input} -> {output}\n"` for each demonstration, then `"{query} ->"`. The model is
//! scored on whether its greedy next token equals the first token of `" " + output`. A rule
//! vector is read at a demonstration's *answer position*: the token(s) of its output (the label
//! word of Wang et al.; the paper's "answer position"). Positions are found from the tokenizer's
//! byte offsets, so the same code works with any tokenizer that reports them.

use std::ops::Range;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use crate::error::{Result, TaskError};
use crate::{Item, Split, TaskSet};

/// Separator between input and output of a demonstration (and after the query).
pub const ARROW: &str = "->";

/// A tokenizer that reports, for every token, the byte range of the text it covers.
/// `icl-probe` implements it for its tokenizers; tests use toy tokenizers.
pub trait TokenizeOffsets {
    /// Token ids of `text` and, per token, the byte range of `text` it stands for.
    fn tokenize_offsets(&self, text: &str)
        -> std::result::Result<Vec<(u32, Range<usize>)>, String>;
}

/// Byte offsets of tokens from the bytes each token decodes to (byte-level BPE tokens decode to
/// exact byte strings whose concatenation is the text), for tokenizers without offset output.
pub fn offsets_from_token_bytes(token_bytes: &[Vec<u8>]) -> Vec<Range<usize>> {
    let mut start = 0;
    token_bytes
        .iter()
        .map(|b| {
            let r = start..start + b.len();
            start = r.end;
            r
        })
        .collect()
}

/// Byte spans of one demonstration inside the prompt text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSpans {
    pub input: Range<usize>,
    pub arrow: Range<usize>,
    pub output: Range<usize>,
    pub newline: Range<usize>,
}

/// A prompt's text with the byte spans of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub text: String,
    pub demos: Vec<DemoSpans>,
    pub query: Range<usize>,
    pub query_arrow: Range<usize>,
}

/// Builds `"{in} -> {out}\n"*k + "{query} ->"` and records where each part is.
pub fn build_prompt(demos: &[(&str, &str)], query: &str) -> Prompt {
    let mut text = String::new();
    let mut spans = Vec::with_capacity(demos.len());
    for (input, output) in demos {
        let i0 = text.len();
        text.push_str(input);
        let input_r = i0..text.len();
        text.push(' ');
        let a0 = text.len();
        text.push_str(ARROW);
        let arrow = a0..text.len();
        text.push(' ');
        let o0 = text.len();
        text.push_str(output);
        let output_r = o0..text.len();
        let n0 = text.len();
        text.push('\n');
        spans.push(DemoSpans {
            input: input_r,
            arrow,
            output: output_r,
            newline: n0..text.len(),
        });
    }
    let q0 = text.len();
    text.push_str(query);
    let query_r = q0..text.len();
    text.push(' ');
    let a0 = text.len();
    text.push_str(ARROW);
    let query_arrow = a0..text.len();
    Prompt {
        text,
        demos: spans,
        query: query_r,
        query_arrow,
    }
}

/// Token indices of one demonstration's parts (every token overlapping the part's bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoPositions {
    pub input: Vec<usize>,
    pub arrow: Vec<usize>,
    /// The answer positions: the tokens of the demonstration's output.
    pub output: Vec<usize>,
    pub newline: Vec<usize>,
}

impl DemoPositions {
    /// The answer position where a rule vector is read: the first token of the output.
    pub fn answer_position(&self) -> usize {
        self.output[0]
    }
}

/// A tokenized prompt with the positions of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedPrompt {
    pub ids: Vec<u32>,
    pub demos: Vec<DemoPositions>,
    pub query: Vec<usize>,
    pub query_arrow: Vec<usize>,
}

impl TokenizedPrompt {
    /// The last position, where the next token is predicted (and task vectors are read/patched).
    pub fn last(&self) -> usize {
        self.ids.len() - 1
    }

    /// The answer position of every demonstration.
    pub fn answer_positions(&self) -> Vec<usize> {
        self.demos
            .iter()
            .map(DemoPositions::answer_position)
            .collect()
    }
}

fn overlapping(tokens: &[(u32, Range<usize>)], span: &Range<usize>) -> Vec<usize> {
    tokens
        .iter()
        .enumerate()
        .filter(|(_, (_, r))| r.start < span.end && span.start < r.end)
        .map(|(i, _)| i)
        .collect()
}

/// Tokenizes a prompt and maps every part to the tokens covering it. Fails if a part (an output,
/// the query's arrow) is covered by no token, which would make its position undefined.
pub fn tokenize_prompt<T: TokenizeOffsets + ?Sized>(
    tok: &T,
    prompt: &Prompt,
) -> Result<TokenizedPrompt> {
    let tokens = tok
        .tokenize_offsets(&prompt.text)
        .map_err(TaskError::Tokenizer)?;
    if tokens.is_empty() {
        return Err(TaskError::Prompt(format!(
            "prompt {:?} has no tokens",
            prompt.text
        )));
    }
    let mut demos = Vec::with_capacity(prompt.demos.len());
    for (d, s) in prompt.demos.iter().enumerate() {
        let p = DemoPositions {
            input: overlapping(&tokens, &s.input),
            arrow: overlapping(&tokens, &s.arrow),
            output: overlapping(&tokens, &s.output),
            newline: overlapping(&tokens, &s.newline),
        };
        if p.output.is_empty() || p.arrow.is_empty() {
            return Err(TaskError::Prompt(format!(
                "demonstration {d} of {:?}: no token covers its output",
                prompt.text
            )));
        }
        demos.push(p);
    }
    let query_arrow = overlapping(&tokens, &prompt.query_arrow);
    if query_arrow.last() != Some(&(tokens.len() - 1)) {
        return Err(TaskError::Prompt(format!(
            "the last token of {:?} does not cover the final arrow",
            prompt.text
        )));
    }
    Ok(TokenizedPrompt {
        ids: tokens.iter().map(|t| t.0).collect(),
        demos,
        query: overlapping(&tokens, &prompt.query),
        query_arrow,
    })
}

/// The token the model must predict after `"{query} ->"`: the first token of `" " + output`.
/// Tokens that cover no text (a BOS the tokenizer adds, as Gemma's does) are skipped: the model
/// never predicts them after the prompt.
pub fn answer_token<T: TokenizeOffsets + ?Sized>(tok: &T, output: &str) -> Result<u32> {
    let t = tok
        .tokenize_offsets(&format!(" {output}"))
        .map_err(TaskError::Tokenizer)?;
    t.iter()
        .find(|x| !x.1.is_empty())
        .map(|x| x.0)
        .ok_or_else(|| TaskError::Prompt(format!("output {output:?} has no tokens")))
}

/// A k-shot prompt before tokenization: demonstrations (from the train split) and the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSpec {
    pub demos: Vec<Item>,
    pub query: Item,
}

impl PromptSpec {
    pub fn prompt(&self) -> Prompt {
        let d: Vec<(&str, &str)> = self
            .demos
            .iter()
            .map(|i| (i.input.as_str(), i.output.as_str()))
            .collect();
        build_prompt(&d, &self.query.input)
    }

    /// The same prompt with demonstrations reduced to the given indices (in that order).
    pub fn with_demos(&self, keep: &[usize]) -> PromptSpec {
        PromptSpec {
            demos: keep.iter().map(|&i| self.demos[i].clone()).collect(),
            query: self.query.clone(),
        }
    }
}

/// Whether `demo` would give away the query's answer (or be the query itself): same input, or the
/// query's input/output appearing on the other side of the demonstration.
pub fn leaks(demo: &Item, query: &Item) -> bool {
    demo.input == query.input || demo.input == query.output || demo.output == query.input
}

/// Samples `n` prompts: queries are the first `n` items of `query_split` in a seeded shuffle (the
/// same queries for every `k`, so zero-shot and k-shot accuracies are paired), each with `k`
/// demonstrations drawn without replacement from the train split, never leaking the query (see
/// [`leaks`]). With `query_split = Train` the queries are Hendel's dummy queries.
pub fn sample_prompts(
    task: &TaskSet,
    query_split: Split,
    k: usize,
    n: usize,
    seed: u64,
) -> Result<Vec<PromptSpec>> {
    let mut queries: Vec<&Item> = task.split(query_split);
    queries.shuffle(&mut ChaCha12Rng::seed_from_u64(seed));
    let train = task.split(Split::Train);
    let mut rng = ChaCha12Rng::seed_from_u64(seed ^ ((k as u64 + 1) << 40) ^ 0x5eed_0fde_0005);
    let mut out = Vec::with_capacity(n.min(queries.len()));
    for q in queries.into_iter().take(n) {
        let pool: Vec<&Item> = train.iter().copied().filter(|d| !leaks(d, q)).collect();
        if pool.len() < k {
            return Err(TaskError::Prompt(format!(
                "task {}: {} train items usable as demonstrations for query {:?}, need {k}",
                task.name,
                pool.len(),
                q.input
            )));
        }
        let demos = pool
            .choose_multiple(&mut rng, k)
            .map(|d| (*d).clone())
            .collect();
        out.push(PromptSpec {
            demos,
            query: q.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits on spaces, attaching the space to the following word like byte-level BPE, and
    /// makes `\n` its own token. Ids are byte sums (only used for equality).
    struct SpaceTok;
    impl TokenizeOffsets for SpaceTok {
        fn tokenize_offsets(
            &self,
            text: &str,
        ) -> std::result::Result<Vec<(u32, Range<usize>)>, String> {
            let b = text.as_bytes();
            let mut out = Vec::new();
            let mut s = 0;
            for i in 1..=b.len() {
                let boundary = i == b.len() || b[i] == b' ' || b[i] == b'\n' || b[i - 1] == b'\n';
                if boundary {
                    let id = b[s..i].iter().map(|&x| x as u32).sum();
                    out.push((id, s..i));
                    s = i;
                }
            }
            Ok(out)
        }
    }

    #[test]
    fn prompt_text_and_spans() {
        let p = build_prompt(&[("hot", "cold"), ("up", "down")], "big");
        assert_eq!(p.text, "hot -> cold\nup -> down\nbig ->");
        assert_eq!(&p.text[p.demos[0].output.clone()], "cold");
        assert_eq!(&p.text[p.demos[1].input.clone()], "up");
        assert_eq!(&p.text[p.query.clone()], "big");
        assert_eq!(&p.text[p.query_arrow.clone()], "->");
        assert_eq!(&p.text[p.demos[1].newline.clone()], "\n");
    }

    #[test]
    fn answer_positions_from_offsets() {
        let p = build_prompt(&[("hot", "cold"), ("up", "down")], "big");
        let t = tokenize_prompt(&SpaceTok, &p).unwrap();
        // tokens: hot, " ->", " cold", "\n", up, " ->", " down", "\n", big, " ->"
        assert_eq!(t.ids.len(), 10);
        assert_eq!(t.answer_positions(), vec![2, 6]);
        assert_eq!(t.demos[0].arrow, vec![1]);
        assert_eq!(t.demos[1].newline, vec![7]);
        assert_eq!(t.query, vec![8]);
        assert_eq!(t.last(), 9);
        assert_eq!(answer_token(&SpaceTok, "cold").unwrap(), t.ids[2]);
        // A tokenizer that adds a BOS (covering no text, as Gemma's): the target is still the
        // output's first token, not the BOS.
        struct BosTok;
        impl TokenizeOffsets for BosTok {
            fn tokenize_offsets(
                &self,
                text: &str,
            ) -> std::result::Result<Vec<(u32, Range<usize>)>, String> {
                let mut v = vec![(2, 0..0)];
                v.extend(SpaceTok.tokenize_offsets(text)?);
                Ok(v)
            }
        }
        assert_eq!(answer_token(&BosTok, "cold").unwrap(), t.ids[2]);
    }

    #[test]
    fn offsets_from_bytes_are_cumulative() {
        let r = offsets_from_token_bytes(&[b"ab".to_vec(), b" c".to_vec(), b"\n".to_vec()]);
        assert_eq!(r, vec![0..2, 2..4, 4..5]);
    }

    #[test]
    fn a_tokenizer_that_drops_the_arrow_is_an_error() {
        struct Bad;
        impl TokenizeOffsets for Bad {
            fn tokenize_offsets(
                &self,
                _: &str,
            ) -> std::result::Result<Vec<(u32, Range<usize>)>, String> {
                Ok(vec![(1, 0..1)])
            }
        }
        let p = build_prompt(&[("a", "b")], "c");
        assert!(tokenize_prompt(&Bad, &p).is_err());
    }
}
