//! A reader for the WordNet 3.0 database files (`data.{noun,adj}`, `index.noun`), as documented in
//! wndb(5WN). Synsets are kept in a map keyed by their offset, so the reader never seeks by byte
//! offset and small hand-written files (tests) need not have consistent offsets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use crate::error::{Result, TaskError};

/// One pointer of a synset (`pointer_symbol synset_offset pos source/target`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// `!` antonym, `@` hypernym, `@i` instance hypernym, ...
    pub symbol: String,
    pub target: u64,
    pub pos: char,
    /// 1-based word number in this synset for lexical pointers, 0 for semantic pointers.
    pub source_word: usize,
    /// 1-based word number in the target synset for lexical pointers, 0 for semantic pointers.
    pub target_word: usize,
}

/// One line of a `data.*` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synset {
    pub offset: u64,
    pub lex_filenum: u32,
    /// `n`, `v`, `a`, `s` (adjective satellite) or `r`.
    pub ss_type: char,
    /// Lemmas as written in the file (`_` joins multi-word lemmas), adjective markers stripped.
    pub words: Vec<String>,
    pub pointers: Vec<Pointer>,
}

/// One line of an `index.*` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub lemma: String,
    /// Synset offsets, most frequent sense first (the order of the file).
    pub offsets: Vec<u64>,
    /// Number of senses tagged in the semantic concordance: a frequency proxy (0 = rare word).
    pub tagsense_cnt: usize,
}

/// The whitespace-separated fields of one line, read in order; every error names the file, the
/// line and the field.
struct Fields<'a> {
    it: std::str::SplitAsciiWhitespace<'a>,
    path: &'a Path,
    line: usize,
}

impl<'a> Fields<'a> {
    fn new(text: &'a str, path: &'a Path, line: usize) -> Self {
        Self {
            it: text.split_ascii_whitespace(),
            path,
            line,
        }
    }

    fn error(&self, message: String) -> TaskError {
        TaskError::parse(self.path, self.line, "WordNet", message)
    }

    fn next(&mut self, what: &str) -> Result<&'a str> {
        let f = self.it.next();
        f.ok_or_else(|| self.error(format!("missing {what}")))
    }

    /// The next field as a number in `radix` (WordNet writes counts in decimal, `w_cnt` and
    /// source/target word numbers in hexadecimal).
    fn num<T: TryFrom<u64>>(&mut self, radix: u32, what: &str) -> Result<T> {
        let s = self.next(what)?;
        self.parse_num(s, radix, what)
    }

    fn parse_num<T: TryFrom<u64>>(&self, s: &str, radix: u32, what: &str) -> Result<T> {
        u64::from_str_radix(s, radix)
            .ok()
            .and_then(|v| T::try_from(v).ok())
            .ok_or_else(|| self.error(format!("bad {what} `{s}`")))
    }

    /// The next field as a part of speech: `n`, `v`, `a`, `s` (adjective satellite) or `r`.
    fn pos(&mut self, what: &str) -> Result<char> {
        match self.next(what)? {
            p @ ("n" | "v" | "a" | "s" | "r") => Ok(p.as_bytes()[0] as char),
            p => Err(self.error(format!("bad {what} `{p}`"))),
        }
    }
}

/// Strips the syntactic marker of adjectives: `able(a)`, `galore(ip)`, `elect(p)`.
fn strip_marker(word: &str) -> &str {
    match word.find('(') {
        Some(i) if word.ends_with(')') => &word[..i],
        _ => word,
    }
}

/// Parses one data-file record (without the gloss).
pub fn parse_data_line(text: &str, path: &Path, line: usize) -> Result<Synset> {
    let body = text.split(" | ").next().unwrap_or(text);
    let mut f = Fields::new(body, path, line);
    let offset = f.num::<u64>(10, "offset")?;
    let lex_filenum = f.num::<u32>(10, "lex_filenum")?;
    let ss_type = f.pos("ss_type")?;
    let w_cnt = f.num::<usize>(16, "w_cnt")?;
    // A count can claim more fields than the line has: never reserve beyond its length.
    let mut words = Vec::with_capacity(w_cnt.min(body.len()));
    for _ in 0..w_cnt {
        let w = f.next("word")?;
        f.next("lex_id")?;
        words.push(strip_marker(w).to_string());
    }
    let p_cnt = f.num::<usize>(10, "p_cnt")?;
    let mut pointers = Vec::with_capacity(p_cnt.min(body.len()));
    for _ in 0..p_cnt {
        let symbol = f.next("pointer symbol")?.to_string();
        let target = f.num::<u64>(10, "pointer offset")?;
        let pos = f.pos("pointer pos")?;
        let st = f.next("pointer source/target")?;
        if st.len() != 4 || !st.is_ascii() {
            return Err(f.error(format!("bad source/target `{st}`")));
        }
        let source_word = f.parse_num::<usize>(&st[..2], 16, "pointer source")?;
        let target_word = f.parse_num::<usize>(&st[2..], 16, "pointer target")?;
        if source_word > w_cnt {
            return Err(f.error(format!("pointer source word {source_word} > w_cnt {w_cnt}")));
        }
        pointers.push(Pointer {
            symbol,
            target,
            pos,
            source_word,
            target_word,
        });
    }
    Ok(Synset {
        offset,
        lex_filenum,
        ss_type,
        words,
        pointers,
    })
}

fn read_lines(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| TaskError::io(path, e))
}

/// Parses a whole `data.*` file; the license header (lines starting with two spaces) is skipped.
pub fn parse_data_file(path: &Path) -> Result<HashMap<u64, Synset>> {
    let text = read_lines(path)?;
    let mut map = HashMap::new();
    for (i, l) in text.lines().enumerate() {
        if l.starts_with("  ") || l.trim().is_empty() {
            continue;
        }
        let s = parse_data_line(l, path, i + 1)?;
        map.insert(s.offset, s);
    }
    Ok(map)
}

/// Parses a whole `index.*` file (header lines start with two spaces).
pub fn parse_index_file(path: &Path) -> Result<HashMap<String, IndexEntry>> {
    let text = read_lines(path)?;
    let mut map = HashMap::new();
    for (i, l) in text.lines().enumerate() {
        if l.starts_with("  ") || l.trim().is_empty() {
            continue;
        }
        let mut f = Fields::new(l, path, i + 1);
        let lemma = f.next("lemma")?.to_string();
        f.next("pos")?;
        let synset_cnt = f.num::<usize>(10, "synset_cnt")?;
        let p_cnt = f.num::<usize>(10, "p_cnt")?;
        for _ in 0..p_cnt {
            f.next("ptr_symbol")?;
        }
        f.next("sense_cnt")?;
        let tagsense_cnt = f.num::<usize>(10, "tagsense_cnt")?;
        let offsets = (0..synset_cnt)
            .map(|_| f.num::<u64>(10, "synset_offset"))
            .collect::<Result<Vec<_>>>()?;
        map.insert(
            lemma.clone(),
            IndexEntry {
                lemma,
                offsets,
                tagsense_cnt,
            },
        );
    }
    Ok(map)
}

/// A WordNet database folder: adjectives (for antonyms) and nouns (for hypernym classes).
#[derive(Debug, Clone)]
pub struct WordNet {
    pub adj: HashMap<u64, Synset>,
    pub noun: HashMap<u64, Synset>,
    pub noun_index: HashMap<String, IndexEntry>,
    pub adj_index: HashMap<String, IndexEntry>,
}

/// A target class of the categorisation tasks: the label printed as output and the WordNet
/// sense that defines it (`plant` sense 2 is flora, sense 1 is a factory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassDef {
    pub label: &'static str,
    pub lemma: &'static str,
    /// 1-based sense number in index.noun.
    pub sense: usize,
}

/// The classes used by the categorisation tasks (senses checked against WordNet 3.0).
pub const CLASSES: &[ClassDef] = &[
    ClassDef {
        label: "animal",
        lemma: "animal",
        sense: 1,
    },
    ClassDef {
        label: "plant",
        lemma: "plant",
        sense: 2,
    },
    ClassDef {
        label: "food",
        lemma: "food",
        sense: 2,
    },
    ClassDef {
        label: "vehicle",
        lemma: "vehicle",
        sense: 1,
    },
    ClassDef {
        label: "clothing",
        lemma: "clothing",
        sense: 1,
    },
    ClassDef {
        label: "furniture",
        lemma: "furniture",
        sense: 1,
    },
    ClassDef {
        label: "tool",
        lemma: "tool",
        sense: 1,
    },
    ClassDef {
        label: "instrument",
        lemma: "musical_instrument",
        sense: 1,
    },
    ClassDef {
        label: "weapon",
        lemma: "weapon",
        sense: 1,
    },
    ClassDef {
        label: "building",
        lemma: "building",
        sense: 1,
    },
];

impl WordNet {
    /// Loads `data.adj`, `data.noun`, `index.adj` and `index.noun` from a WordNet `dict` folder.
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(WordNet {
            adj: parse_data_file(&dir.join("data.adj"))?,
            noun: parse_data_file(&dir.join("data.noun"))?,
            noun_index: parse_index_file(&dir.join("index.noun"))?,
            adj_index: parse_index_file(&dir.join("index.adj"))?,
        })
    }

    /// Adjective antonym pairs from the lexical `!` pointers of head adjective synsets, as
    /// (source lemma, target lemma), in file-offset order (deterministic).
    pub fn antonym_pairs(&self) -> Vec<(String, String)> {
        let mut offsets: Vec<&u64> = self.adj.keys().collect();
        offsets.sort();
        let mut out = Vec::new();
        for off in offsets {
            let s = &self.adj[off];
            for p in s.pointers.iter().filter(|p| p.symbol == "!") {
                let Some(t) = self.adj.get(&p.target) else {
                    continue;
                };
                if p.source_word == 0 || p.target_word == 0 {
                    continue;
                }
                let (Some(a), Some(b)) = (
                    s.words.get(p.source_word - 1),
                    t.words.get(p.target_word - 1),
                ) else {
                    continue;
                };
                out.push((a.clone(), b.clone()));
            }
        }
        out
    }

    /// All (transitive) hypernyms of a noun synset, following `@` and `@i` pointers.
    pub fn ancestors(&self, offset: u64) -> HashSet<u64> {
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([offset]);
        while let Some(o) = queue.pop_front() {
            let Some(s) = self.noun.get(&o) else { continue };
            for p in &s.pointers {
                if (p.symbol == "@" || p.symbol == "@i") && p.pos == 'n' && seen.insert(p.target) {
                    queue.push_back(p.target);
                }
            }
        }
        seen
    }

    /// Resolves the class synsets of `classes` through index.noun.
    pub fn class_offsets(&self, classes: &[ClassDef]) -> Result<Vec<u64>> {
        classes
            .iter()
            .map(|c| {
                self.noun_index
                    .get(c.lemma)
                    .and_then(|e| e.offsets.get(c.sense.wrapping_sub(1)).copied())
                    .ok_or_else(|| TaskError::MissingClass {
                        label: c.label.into(),
                        lemma: c.lemma.into(),
                        sense: c.sense,
                    })
            })
            .collect()
    }

    /// Nouns whose senses fall under exactly one of `classes` (ambiguous nouns such as `chicken`,
    /// animal and food, are dropped) and whose first sense is in that class. Returns (lemma,
    /// class index, tagsense_cnt), sorted by lemma. Only lemmas accepted by `keep` are examined.
    pub fn classify_nouns(
        &self,
        classes: &[ClassDef],
        keep: impl Fn(&IndexEntry) -> bool,
    ) -> Result<Vec<(String, usize, usize)>> {
        let class_offs = self.class_offsets(classes)?;
        let mut lemmas: Vec<&IndexEntry> = self.noun_index.values().filter(|e| keep(e)).collect();
        lemmas.sort_by(|a, b| a.lemma.cmp(&b.lemma));
        let mut out = Vec::new();
        for e in lemmas {
            let mut found: Vec<Option<usize>> = Vec::with_capacity(e.offsets.len());
            for &o in &e.offsets {
                let anc = self.ancestors(o);
                let hits: Vec<usize> = class_offs
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| anc.contains(c) || **c == o)
                    .map(|(i, _)| i)
                    .collect();
                match hits.len() {
                    0 => found.push(None),
                    1 => found.push(Some(hits[0])),
                    _ => found.push(Some(usize::MAX)),
                }
            }
            let classes_hit: HashSet<usize> = found.iter().flatten().copied().collect();
            if classes_hit.len() != 1 || classes_hit.contains(&usize::MAX) {
                continue;
            }
            if let Some(Some(c)) = found.first() {
                out.push((e.lemma.clone(), *c, e.tagsense_cnt));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_adjective_record() {
        let l = "00001740 00 a 01 able 0 005 = 05200169 n 0000 = 05616246 n 0000 + 05616246 n 0101 + 05200169 n 0101 ! 00002098 a 0101 | (usually followed by `to') having the necessary means";
        let s = parse_data_line(l, Path::new("data.adj"), 1).unwrap();
        assert_eq!(s.offset, 1740);
        assert_eq!(s.ss_type, 'a');
        assert_eq!(s.words, vec!["able"]);
        assert_eq!(s.pointers.len(), 5);
        let ant = &s.pointers[4];
        assert_eq!(
            (
                ant.symbol.as_str(),
                ant.target,
                ant.source_word,
                ant.target_word
            ),
            ("!", 2098, 1, 1)
        );
    }

    #[test]
    fn strips_adjective_markers_and_reads_hex_word_count() {
        let l = "00003000 00 s 0b w1(a) 0 w2 0 w3 0 w4 0 w5 0 w6 0 w7 0 w8 0 w9 0 w10(ip) 0 w11 0 000 | g";
        let s = parse_data_line(l, Path::new("x"), 1).unwrap();
        assert_eq!(s.words.len(), 11);
        assert_eq!(s.words[0], "w1");
        assert_eq!(s.words[9], "w10");
    }

    #[test]
    fn truncated_record_is_a_typed_error() {
        let l = "00001740 00 a 01 able 0 005 = 05200169 n";
        match parse_data_line(l, Path::new("data.adj"), 7) {
            Err(TaskError::Parse { line: 7, .. }) => {}
            other => panic!("expected parse error, got {other:?}"),
        }
        assert!(parse_data_line("0000x 00 a 01 w 0 000", Path::new("d"), 1).is_err());
    }

    /// Hostile records: each a typed error naming the field, never a panic or a huge allocation.
    #[test]
    fn hostile_records_are_typed_errors() {
        let cases = [
            // A 4-byte source/target that is not ASCII (slicing it at byte 2 would split the euro sign).
            (
                "00001740 00 a 01 able 0 001 ! 00002098 a a\u{20ac}",
                "source/target",
            ),
            // Word and pointer counts far beyond the line (must not reserve them).
            ("00001740 00 a ffffffffffff able 0 000", "missing lex_id"),
            (
                "00001740 00 a 01 able 0 99999999999 ! 00002098 a 0101",
                "missing pointer",
            ),
            ("00001740 00 q 01 able 0 000", "bad ss_type `q`"),
            (
                "00001740 00 a 01 able 0 001 ! 00002098 x 0101",
                "bad pointer pos `x`",
            ),
            (
                "00001740 00 a 01 able 0 001 ! 00002098 a 0301",
                "pointer source word 3 > w_cnt 1",
            ),
            (
                "00001740 00 a 01 able 0 001 ! 00002098 a 01zz",
                "bad pointer target `zz`",
            ),
        ];
        for (l, want) in cases {
            match parse_data_line(l, Path::new("data.adj"), 3) {
                Err(e @ TaskError::Parse { line: 3, .. }) => {
                    assert!(e.to_string().contains(want), "{l}: {e}")
                }
                other => panic!("{l}: expected a parse error, got {other:?}"),
            }
        }
    }
}
