//! In-context-learning task sets built from real data, and the prompts of the rule-vector
//! experiments.
//!
//! * [`TaskBuilder`] turns WordNet 3.0, FreeDict eng-fra and countryinfo into task sets of
//!   `{input, output, split}` items (JSONL on disk), deduplicated and split by a fixed seed.
//! * [`prompt`] samples k-shot prompts (`"{input} -> {output}\n"` per demonstration, then
//!   `"{query} ->"`) and, given any tokenizer implementing [`TokenizeOffsets`], finds each
//!   demonstration's answer position(s), where rule vectors are read.
//!
//! The crate has no deep-learning dependency: models and tokenizers live in `icl-probe`.

pub mod countryinfo;
pub mod error;
pub mod freedict;
pub mod prompt;
pub mod split;
pub mod tasks;
pub mod wordnet;

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use error::{Result, TaskError};
pub use prompt::{
    answer_token, build_prompt, offsets_from_token_bytes, sample_prompts, tokenize_prompt,
    DemoPositions, DemoSpans, Prompt, PromptSpec, TokenizeOffsets, TokenizedPrompt,
};
pub use split::Split;
pub use tasks::{task_spec, RuleKind, Source, Sources, TaskBuilder, TaskSpec, TASKS};

/// One input/output pair of a task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Item {
    pub input: String,
    pub output: String,
    pub split: Split,
}

/// A named task: its items in all splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSet {
    pub name: String,
    pub items: Vec<Item>,
}

impl TaskSet {
    /// The items of one split, in file order.
    pub fn split(&self, s: Split) -> Vec<&Item> {
        self.items.iter().filter(|i| i.split == s).collect()
    }

    /// Number of items per split (train, dev, test).
    pub fn counts(&self) -> (usize, usize, usize) {
        let c = |s| self.items.iter().filter(|i| i.split == s).count();
        (c(Split::Train), c(Split::Dev), c(Split::Test))
    }

    /// Writes one JSON object per line: `{"input": .., "output": .., "split": ..}`.
    pub fn write_jsonl(&self, path: &Path) -> Result<()> {
        let f = std::fs::File::create(path).map_err(|e| TaskError::io(path, e))?;
        let mut w = std::io::BufWriter::new(f);
        for it in &self.items {
            let line = serde_json::to_string(it).map_err(|e| TaskError::Json {
                path: path.into(),
                source: e,
            })?;
            writeln!(w, "{line}").map_err(|e| TaskError::io(path, e))?;
        }
        w.flush().map_err(|e| TaskError::io(path, e))
    }

    /// Reads a JSONL task file; the task is named after the file stem. Blank lines are skipped.
    pub fn read_jsonl(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|e| TaskError::io(path, e))?;
        let mut items = Vec::new();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| TaskError::io(path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let it: Item = serde_json::from_str(&line)
                .map_err(|e| TaskError::parse(path, i + 1, "task JSONL", e.to_string()))?;
            items.push(it);
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(TaskSet { name, items })
    }
}
