//! The task builders: each turns a data source into deduplicated, split items.
//!
//! Single-demonstration rules (Hendel et al.'s groups) can be guessed from one example
//! (`hot -> cold` already says "antonym"). Multi-demonstration rules cannot: `dog -> animal` might
//! mean "hypernym", "mammal?", "living thing"; `cat, chair -> cat` might be "first", "animal",
//! "shorter word". Only several demonstrations pin them down, which is what the rule-vector
//! experiments need.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::countryinfo::read_capitals;
use crate::error::{Result, TaskError};
use crate::freedict::{first_sense_translations, read_dictionary};
use crate::split::{dedup, split_by_group, split_sizes, Candidate, Components, Split};
use crate::wordnet::{WordNet, CLASSES};
use crate::{Item, TaskSet};

/// Nouns with the index of their class in [`CLASSES`].
type ClassWords = Vec<(String, usize)>;

/// Whether a single demonstration suffices to identify the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    SingleDemonstration,
    MultiDemonstration,
}

/// A data source a builder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    WordNet,
    FreeDict,
    CountryInfo,
}

impl Source {
    /// The asset-cache name of the source.
    pub fn asset_name(self) -> &'static str {
        match self {
            Source::WordNet => "wordnet-3.0",
            Source::FreeDict => "freedict-eng-fra",
            Source::CountryInfo => "countryinfo",
        }
    }
}

/// A task the crate can build.
#[derive(Debug, Clone, Copy)]
pub struct TaskSpec {
    pub name: &'static str,
    pub kind: RuleKind,
    pub sources: &'static [Source],
    pub description: &'static str,
}

/// All tasks, single-demonstration rules first.
pub const TASKS: &[TaskSpec] = &[
    TaskSpec { name: "antonym", kind: RuleKind::SingleDemonstration, sources: &[Source::WordNet], description: "WordNet 3.0 adjective antonyms (lexical `!` pointers), both directions" },
    TaskSpec { name: "country_capital", kind: RuleKind::SingleDemonstration, sources: &[Source::CountryInfo], description: "country -> capital (countryinfo `capital`)" },
    TaskSpec { name: "en_fr", kind: RuleKind::SingleDemonstration, sources: &[Source::FreeDict], description: "English -> French, first single-word translation of the first sense (FreeDict eng-fra)" },
    TaskSpec { name: "next_letter", kind: RuleKind::SingleDemonstration, sources: &[], description: "letter -> next letter (a..y, A..Y)" },
    TaskSpec { name: "prev_letter", kind: RuleKind::SingleDemonstration, sources: &[], description: "letter -> previous letter (b..z, B..Z)" },
    TaskSpec { name: "to_upper", kind: RuleKind::SingleDemonstration, sources: &[Source::WordNet], description: "common English noun -> the same word in capitals" },
    TaskSpec { name: "list_first", kind: RuleKind::SingleDemonstration, sources: &[Source::WordNet], description: "comma-separated list of 3-5 common nouns -> first element" },
    TaskSpec { name: "list_last", kind: RuleKind::SingleDemonstration, sources: &[Source::WordNet], description: "comma-separated list of 3-5 common nouns -> last element" },
    TaskSpec { name: "category", kind: RuleKind::MultiDemonstration, sources: &[Source::WordNet], description: "noun -> its WordNet hypernym class (animal, plant, food, vehicle, clothing, furniture, tool, instrument, weapon, building)" },
    TaskSpec { name: "pick_animal", kind: RuleKind::MultiDemonstration, sources: &[Source::WordNet], description: "two nouns, one an animal, in random order -> the animal (which of two categories)" },
    TaskSpec { name: "same_category", kind: RuleKind::MultiDemonstration, sources: &[Source::WordNet], description: "two nouns -> yes if they share a WordNet class, else no (shared property)" },
];

/// Looks a task up by name.
pub fn task_spec(name: &str) -> Result<&'static TaskSpec> {
    TASKS.iter().find(|t| t.name == name).ok_or_else(|| {
        TaskError::UnknownTask(
            name.to_string(),
            TASKS.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
        )
    })
}

/// Where the source data lie: a WordNet `dict` folder (data.adj, data.noun, index.noun), a folder
/// with `freedict-eng-fra.index` and `.dict.dz`, a folder of countryinfo `*.json`.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub wordnet: Option<PathBuf>,
    pub freedict: Option<PathBuf>,
    pub countryinfo: Option<PathBuf>,
}

/// Lowercase ASCII letters only, with a length in `min..=max`.
pub fn is_plain_word(w: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase())
}

/// Letters and spaces only (ASCII), at least 3 characters: country and capital names.
fn is_plain_name(w: &str) -> bool {
    w.len() >= 3 && w.bytes().all(|b| b.is_ascii_alphabetic() || b == b' ')
}

/// A single French word: alphabetic characters only (accents allowed, no space, apostrophe or
/// hyphen), at least 2 characters.
fn is_french_word(w: &str) -> bool {
    w.chars().count() >= 2 && w.chars().all(char::is_alphabetic)
}

/// Builds tasks, parsing each source once and reusing it across tasks.
pub struct TaskBuilder {
    sources: Sources,
    wordnet: Option<WordNet>,
}

/// Common nouns for the algorithmic tasks: plain words of 3–8 letters tagged at least 3 times in
/// WordNet's semantic concordance (so "table", not "tabard").
const VOCAB_MIN_TAGSENSE: usize = 3;
/// Antonym adjectives must be tagged at least once.
const ANTONYM_MIN_TAGSENSE: usize = 1;
/// Nouns for the categorisation tasks must be tagged at least once.
const CATEGORY_MIN_TAGSENSE: usize = 1;
/// At most this many nouns per class (the most frequent), so no class dominates.
const CATEGORY_PER_CLASS: usize = 80;
/// Items generated for the list and pair tasks.
const GENERATED_ITEMS: usize = 600;

impl TaskBuilder {
    pub fn new(sources: Sources) -> Self {
        TaskBuilder {
            sources,
            wordnet: None,
        }
    }

    fn source_path(&self, task: &str, s: Source) -> Result<&Path> {
        let p = match s {
            Source::WordNet => &self.sources.wordnet,
            Source::FreeDict => &self.sources.freedict,
            Source::CountryInfo => &self.sources.countryinfo,
        };
        p.as_deref().ok_or(TaskError::MissingSource {
            task: task.to_string(),
            source_name: s.asset_name(),
        })
    }

    fn wordnet(&mut self, task: &str) -> Result<&WordNet> {
        if self.wordnet.is_none() {
            let dir = self.source_path(task, Source::WordNet)?.to_path_buf();
            self.wordnet = Some(WordNet::load(&dir)?);
        }
        Ok(self.wordnet.as_ref().expect("loaded above"))
    }

    /// Builds the named task with the given seed (splits and generated items depend on it).
    pub fn build(&mut self, name: &str, seed: u64) -> Result<TaskSet> {
        let spec = task_spec(name)?;
        let items = match name {
            "antonym" => self.antonym(seed)?,
            "country_capital" => self.country_capital(seed)?,
            "en_fr" => self.en_fr(seed)?,
            "next_letter" => letters(1, seed),
            "prev_letter" => letters(-1, seed),
            "to_upper" => self.uppercase(seed)?,
            "list_first" => self.list(true, seed)?,
            "list_last" => self.list(false, seed)?,
            "category" => self.category(seed)?,
            "pick_animal" => self.pick_animal(seed)?,
            "same_category" => self.same_category(seed)?,
            _ => unreachable!("task_spec accepted {name}"),
        };
        let needed = 10;
        if items.len() < needed {
            return Err(TaskError::TooFewItems {
                task: name.into(),
                found: items.len(),
                needed,
            });
        }
        Ok(TaskSet {
            name: spec.name.to_string(),
            items,
        })
    }

    fn antonym(&mut self, seed: u64) -> Result<Vec<Item>> {
        let wn = self.wordnet("antonym")?;
        // Both words must be tagged in the concordance: "hot/cold", not "abaxial/adaxial".
        let common = |w: &str| {
            is_plain_word(w, 3, 12)
                && wn
                    .adj_index
                    .get(w)
                    .is_some_and(|e| e.tagsense_cnt >= ANTONYM_MIN_TAGSENSE)
        };
        let pairs: Vec<(String, String)> = wn
            .antonym_pairs()
            .into_iter()
            .filter(|(a, b)| common(a) && common(b))
            .collect();
        // Words linked by antonymy (good-bad, good-evil) form one group, kept in one split.
        let mut comp = Components::default();
        for (a, b) in &pairs {
            comp.union(a, b);
        }
        let cands = pairs
            .iter()
            .map(|(a, b)| Candidate {
                input: a.clone(),
                output: b.clone(),
                group: comp.find(a),
            })
            .collect();
        Ok(finish(dedup(cands), seed))
    }

    fn country_capital(&mut self, seed: u64) -> Result<Vec<Item>> {
        let dir = self.source_path("country_capital", Source::CountryInfo)?;
        let cands = read_capitals(dir)?
            .into_iter()
            .filter(|(c, k)| is_plain_name(c) && is_plain_name(k))
            .map(|(c, k)| Candidate {
                group: c.clone(),
                input: c,
                output: k,
            })
            .collect();
        Ok(finish(dedup(cands), seed))
    }

    fn en_fr(&mut self, seed: u64) -> Result<Vec<Item>> {
        let dir = self.source_path("en_fr", Source::FreeDict)?;
        let index = dir.join("freedict-eng-fra.index");
        let dz = dir.join("freedict-eng-fra.dict.dz");
        let dict = if dz.exists() {
            dz
        } else {
            dir.join("freedict-eng-fra.dict")
        };
        let mut cands = Vec::new();
        for e in read_dictionary(&index, &dict)? {
            if !is_plain_word(&e.headword, 3, 12) {
                continue;
            }
            let Some(fr) = first_sense_translations(&e)
                .into_iter()
                .find(|t| is_french_word(t))
            else {
                continue;
            };
            cands.push(Candidate {
                group: e.headword.clone(),
                input: e.headword,
                output: fr,
            });
        }
        Ok(finish(dedup(cands), seed))
    }

    /// Common nouns (see [`VOCAB_MIN_TAGSENSE`]), sorted.
    fn vocabulary(&mut self, task: &str) -> Result<Vec<String>> {
        let wn = self.wordnet(task)?;
        let mut v: Vec<String> = wn
            .noun_index
            .values()
            .filter(|e| e.tagsense_cnt >= VOCAB_MIN_TAGSENSE && is_plain_word(&e.lemma, 3, 8))
            .map(|e| e.lemma.clone())
            .collect();
        v.sort();
        Ok(v)
    }

    fn uppercase(&mut self, seed: u64) -> Result<Vec<Item>> {
        let cands = self
            .vocabulary("to_upper")?
            .into_iter()
            .map(|w| Candidate {
                output: w.to_ascii_uppercase(),
                group: w.clone(),
                input: w,
            })
            .collect();
        Ok(finish(dedup(cands), seed))
    }

    fn list(&mut self, first: bool, seed: u64) -> Result<Vec<Item>> {
        let vocab = self.vocabulary(if first { "list_first" } else { "list_last" })?;
        if vocab.len() < 5 {
            return Ok(Vec::new());
        }
        let mut rng = ChaCha12Rng::seed_from_u64(seed ^ 0x6c69_7374);
        let mut cands = Vec::new();
        for _ in 0..GENERATED_ITEMS * 2 {
            if cands.len() >= GENERATED_ITEMS {
                break;
            }
            let n = rng.random_range(3..=5);
            let words: Vec<&String> = vocab.choose_multiple(&mut rng, n).collect();
            let input = words
                .iter()
                .map(|w| w.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let output = if first { words[0] } else { words[n - 1] }.clone();
            cands.push(Candidate {
                group: input.clone(),
                input,
                output,
            });
        }
        Ok(finish(dedup(cands), seed))
    }

    /// Nouns with their class, at most [`CATEGORY_PER_CLASS`] per class (most frequent first).
    fn category_words(&mut self) -> Result<Vec<(String, usize)>> {
        let wn = self.wordnet("category")?;
        let class_labels: HashSet<&str> = CLASSES.iter().map(|c| c.label).collect();
        let mut all = wn.classify_nouns(CLASSES, |e| {
            e.tagsense_cnt >= CATEGORY_MIN_TAGSENSE && is_plain_word(&e.lemma, 3, 12)
        })?;
        all.retain(|(w, _, _)| !class_labels.contains(w.as_str()));
        let mut out = Vec::new();
        for c in 0..CLASSES.len() {
            let mut members: Vec<&(String, usize, usize)> =
                all.iter().filter(|x| x.1 == c).collect();
            members.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
            out.extend(
                members
                    .into_iter()
                    .take(CATEGORY_PER_CLASS)
                    .map(|(w, c, _)| (w.clone(), *c)),
            );
        }
        out.sort();
        Ok(out)
    }

    fn category(&mut self, seed: u64) -> Result<Vec<Item>> {
        let cands = self
            .category_words()?
            .into_iter()
            .map(|(w, c)| Candidate {
                group: w.clone(),
                input: w,
                output: CLASSES[c].label.to_string(),
            })
            .collect();
        Ok(finish(dedup(cands), seed))
    }

    /// Splits the category nouns (as in `category`, same seed), so pair tasks built from them
    /// never show a test word in a demonstration.
    fn category_words_by_split(&mut self, seed: u64) -> Result<Vec<(Split, ClassWords)>> {
        let words = self.category_words()?;
        let cands: Vec<Candidate> = words
            .iter()
            .map(|(w, c)| Candidate {
                input: w.clone(),
                output: c.to_string(),
                group: w.clone(),
            })
            .collect();
        let split = split_by_group(&cands, seed);
        Ok(Split::ALL
            .iter()
            .map(|&s| {
                let ws = split
                    .iter()
                    .filter(|(_, sp)| *sp == s)
                    .map(|(c, _)| (c.input.clone(), c.output.parse::<usize>().unwrap_or(0)))
                    .collect();
                (s, ws)
            })
            .collect())
    }

    fn pick_animal(&mut self, seed: u64) -> Result<Vec<Item>> {
        let animal = CLASSES
            .iter()
            .position(|c| c.label == "animal")
            .unwrap_or(0);
        let (n_test, n_dev) = split_sizes(GENERATED_ITEMS);
        let mut rng = ChaCha12Rng::seed_from_u64(seed ^ 0x7069_636b);
        let mut items = Vec::new();
        for (split, words) in self.category_words_by_split(seed)? {
            let animals: Vec<&String> = words
                .iter()
                .filter(|w| w.1 == animal)
                .map(|w| &w.0)
                .collect();
            let others: Vec<&String> = words
                .iter()
                .filter(|w| w.1 != animal)
                .map(|w| &w.0)
                .collect();
            let target = match split {
                Split::Test => n_test,
                Split::Dev => n_dev,
                Split::Train => GENERATED_ITEMS - n_test - n_dev,
            };
            let mut seen = BTreeSet::new();
            for _ in 0..target * 4 {
                if seen.len() >= target || animals.is_empty() || others.is_empty() {
                    break;
                }
                let a = animals.choose(&mut rng).expect("non-empty");
                let o = others.choose(&mut rng).expect("non-empty");
                let input = if rng.random_bool(0.5) {
                    format!("{a}, {o}")
                } else {
                    format!("{o}, {a}")
                };
                if seen.insert(input.clone()) {
                    items.push(Item {
                        input,
                        output: (*a).clone(),
                        split,
                    });
                }
            }
        }
        Ok(items)
    }

    fn same_category(&mut self, seed: u64) -> Result<Vec<Item>> {
        let (n_test, n_dev) = split_sizes(GENERATED_ITEMS);
        let mut rng = ChaCha12Rng::seed_from_u64(seed ^ 0x7361_6d65);
        let mut items = Vec::new();
        for (split, words) in self.category_words_by_split(seed)? {
            let target = match split {
                Split::Test => n_test,
                Split::Dev => n_dev,
                Split::Train => GENERATED_ITEMS - n_test - n_dev,
            };
            let mut seen = BTreeSet::new();
            for i in 0..target * 8 {
                if seen.len() >= target || words.len() < 2 {
                    break;
                }
                // Alternate yes/no so the labels are balanced.
                let want_same = i % 2 == 0;
                let a = words.choose(&mut rng).expect("non-empty");
                let pool: Vec<&(String, usize)> = words
                    .iter()
                    .filter(|b| b.0 != a.0 && (b.1 == a.1) == want_same)
                    .collect();
                let Some(b) = pool.choose(&mut rng) else {
                    continue;
                };
                let input = format!("{}, {}", a.0, b.0);
                let output = if want_same { "yes" } else { "no" }.to_string();
                if seen.insert(input.clone()) {
                    items.push(Item {
                        input,
                        output,
                        split,
                    });
                }
            }
        }
        Ok(items)
    }
}

/// Letters shifted by `step` within each case: `a -> b`, ..., `Y -> Z` for `step = 1`.
fn letters(step: i8, seed: u64) -> Vec<Item> {
    let mut cands = Vec::new();
    for base in [b'a', b'A'] {
        for i in 0..26u8 {
            let j = i as i16 + step as i16;
            if !(0..26).contains(&j) {
                continue;
            }
            let (x, y) = ((base + i) as char, (base + j as u8) as char);
            cands.push(Candidate {
                input: x.to_string(),
                output: y.to_string(),
                group: x.to_string(),
            });
        }
    }
    finish(dedup(cands), seed)
}

fn finish(cands: Vec<Candidate>, seed: u64) -> Vec<Item> {
    split_by_group(&cands, seed)
        .into_iter()
        .map(|(c, split)| Item {
            input: c.input,
            output: c.output,
            split,
        })
        .collect()
}

/// Shuffles a copy of `items` with the seed (helper for samplers that need a random order).
pub fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut v = items.to_vec();
    v.shuffle(&mut ChaCha12Rng::seed_from_u64(seed));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_cover_both_cases_and_shift() {
        let items = letters(1, 0);
        assert_eq!(items.len(), 50);
        assert!(items.iter().any(|i| i.input == "a" && i.output == "b"));
        assert!(items.iter().any(|i| i.input == "Y" && i.output == "Z"));
        assert!(!items.iter().any(|i| i.input == "z" || i.input == "Z"));
        let prev = letters(-1, 0);
        assert!(prev
            .iter()
            .all(|i| i.output.as_bytes()[0] + 1 == i.input.as_bytes()[0]));
    }

    #[test]
    fn word_filters() {
        assert!(is_plain_word("cat", 3, 8));
        assert!(!is_plain_word("ox", 3, 8));
        assert!(!is_plain_word("ice_cream", 3, 12));
        assert!(!is_plain_word("Paris", 3, 8));
        assert!(is_french_word("été"));
        assert!(!is_french_word("s'abaisser"));
        assert!(!is_french_word("pomme de terre"));
        assert!(is_plain_name("United States"));
        assert!(!is_plain_name("Bogotá"));
    }

    #[test]
    fn unknown_task_lists_the_known_ones() {
        match task_spec("nope") {
            Err(TaskError::UnknownTask(n, known)) => {
                assert_eq!(n, "nope");
                assert!(known.contains("antonym"));
            }
            _ => panic!("expected UnknownTask"),
        }
    }
}
