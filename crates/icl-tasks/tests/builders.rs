//! Builders and parsers on the synthetic samples in tests/data (see its README).

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use icl_tasks::freedict::{first_sense_translations, read_dictionary};
use icl_tasks::split::Split;
use icl_tasks::wordnet::{WordNet, CLASSES};
use icl_tasks::{sample_prompts, Sources, TaskBuilder, TaskError, TaskSet, TASKS};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(p)
}

/// The freedict sample with its `.dict` gzipped to `.dict.dz`, as in the real package.
fn freedict_dz() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        data("freedict/freedict-eng-fra.index"),
        dir.path().join("freedict-eng-fra.index"),
    )
    .unwrap();
    let raw = std::fs::read(data("freedict/freedict-eng-fra.dict")).unwrap();
    let f = std::fs::File::create(dir.path().join("freedict-eng-fra.dict.dz")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    gz.finish().unwrap();
    dir
}

fn builder(freedict: &Path) -> TaskBuilder {
    TaskBuilder::new(Sources {
        wordnet: Some(data("wordnet")),
        freedict: Some(freedict.to_path_buf()),
        countryinfo: Some(data("countryinfo")),
    })
}

#[test]
fn wordnet_antonyms_follow_lexical_pointers() {
    let wn = WordNet::load(&data("wordnet")).unwrap();
    let pairs: BTreeSet<(String, String)> = wn.antonym_pairs().into_iter().collect();
    for (a, b) in [
        ("big", "little"),
        ("large", "small"),
        ("small", "large"),
        ("little", "big"),
        ("good", "evil"),
    ] {
        assert!(
            pairs.contains(&(a.to_string(), b.to_string())),
            "missing {a} -> {b}"
        );
    }
    assert!(!pairs.contains(&("big".to_string(), "small".to_string())));
    // Satellite marker stripped.
    assert!(wn
        .adj
        .values()
        .any(|s| s.words.first().map(String::as_str) == Some("tepid")));
}

#[test]
fn wordnet_classes_walk_hypernyms_and_drop_ambiguous_nouns() {
    let wn = WordNet::load(&data("wordnet")).unwrap();
    let got = wn.classify_nouns(CLASSES, |_| true).unwrap();
    let class_of = |w: &str| got.iter().find(|x| x.0 == w).map(|x| CLASSES[x.1].label);
    assert_eq!(class_of("dog"), Some("animal"));
    assert_eq!(
        class_of("oak"),
        Some("plant"),
        "plant sense 2 (flora), not the factory"
    );
    assert_eq!(class_of("steak"), Some("food"));
    assert_eq!(class_of("piano"), Some("instrument"));
    assert_eq!(
        class_of("mouse"),
        Some("animal"),
        "second sense is in no class"
    );
    assert_eq!(class_of("chicken"), None, "food and animal: ambiguous");
    assert_eq!(class_of("lassie"), Some("animal"), "instance hypernym");
    assert_eq!(class_of("device"), None);
}

#[test]
fn freedict_reads_plain_and_dictzip() {
    let dz = freedict_dz();
    let a = read_dictionary(
        &data("freedict/freedict-eng-fra.index"),
        &data("freedict/freedict-eng-fra.dict"),
    )
    .unwrap();
    let b = read_dictionary(
        &dz.path().join("freedict-eng-fra.index"),
        &dz.path().join("freedict-eng-fra.dict.dz"),
    )
    .unwrap();
    assert_eq!(a, b);
    assert!(a.iter().all(|e| !e.headword.starts_with("00database")));
    let cat = a.iter().find(|e| e.headword == "cat").unwrap();
    assert_eq!(first_sense_translations(cat), vec!["chat"]);
    let summer = a.iter().find(|e| e.headword == "summer").unwrap();
    assert_eq!(first_sense_translations(summer), vec!["été"]);
}

#[test]
fn freedict_offset_past_the_end_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("x.index");
    let dict = dir.path().join("x.dict");
    std::fs::write(&dict, "cat\nchat\n").unwrap();
    std::fs::write(&idx, "cat\tA\tZ\n").unwrap();
    match read_dictionary(&idx, &dict) {
        Err(TaskError::Parse { line: 1, .. }) => {}
        other => panic!("expected parse error, got {other:?}"),
    }
    std::fs::write(&idx, "cat\tA\n").unwrap();
    assert!(matches!(
        read_dictionary(&idx, &dict),
        Err(TaskError::Parse { .. })
    ));
}

#[test]
fn countryinfo_skips_null_and_takes_first_of_a_list() {
    let caps = icl_tasks::countryinfo::read_capitals(&data("countryinfo")).unwrap();
    assert!(caps.contains(&("France".into(), "Paris".into())));
    assert!(caps.contains(&("Vatican City State".into(), "Vatican City".into())));
    assert!(!caps.iter().any(|(c, _)| c == "Antarctica"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.json"), "{\"name\": ").unwrap();
    assert!(matches!(
        icl_tasks::countryinfo::read_capitals(dir.path()),
        Err(TaskError::Json { .. })
    ));
}

#[test]
fn every_task_builds_with_disjoint_splits() {
    let dz = freedict_dz();
    let mut b = builder(dz.path());
    for spec in TASKS {
        let set = b
            .build(spec.name, 3)
            .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        let (tr, dv, te) = set.counts();
        assert!(
            tr > 0 && te > 0,
            "{}: train {tr} dev {dv} test {te}",
            spec.name
        );
        // Inputs are unique and never in two splits.
        let inputs: HashSet<&str> = set.items.iter().map(|i| i.input.as_str()).collect();
        assert_eq!(
            inputs.len(),
            set.items.len(),
            "{}: duplicate inputs",
            spec.name
        );
        assert!(
            set.items.iter().all(|i| i.input != i.output),
            "{}: copy items",
            spec.name
        );
        // Words of the word-level tasks never appear in two splits (antonym clusters, pair tasks).
        if matches!(
            spec.name,
            "antonym" | "pick_animal" | "same_category" | "category"
        ) {
            let words = |s: Split| -> HashSet<String> {
                set.split(s)
                    .iter()
                    .flat_map(|i| i.input.split(", ").map(str::to_string).collect::<Vec<_>>())
                    .chain(if spec.name == "antonym" {
                        set.split(s).iter().map(|i| i.output.clone()).collect()
                    } else {
                        vec![]
                    })
                    .collect()
            };
            let (a, c) = (words(Split::Train), words(Split::Test));
            assert!(
                a.is_disjoint(&c),
                "{}: words in train and test: {:?}",
                spec.name,
                a.intersection(&c).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn filters_apply_to_the_samples() {
    let dz = freedict_dz();
    let mut b = builder(dz.path());
    let ant = b.build("antonym", 0).unwrap();
    assert!(!ant
        .items
        .iter()
        .any(|i| i.input.contains("axial") || i.input.contains('_')));
    assert!(ant
        .items
        .iter()
        .any(|i| i.input == "hot" && i.output == "cold"));
    let fr = b.build("en_fr", 0).unwrap();
    let pairs: HashSet<(&str, &str)> = fr
        .items
        .iter()
        .map(|i| (i.input.as_str(), i.output.as_str()))
        .collect();
    assert!(pairs.contains(&("hello", "bonjour")));
    assert!(pairs.contains(&("abandon", "abandonner")));
    assert!(!fr
        .items
        .iter()
        .any(|i| i.input == "taxi" || i.input == "Paris" || i.input == "make up"));
    let cc = b.build("country_capital", 0).unwrap();
    assert!(!cc
        .items
        .iter()
        .any(|i| i.input == "Colombia" || i.input == "Singapore" || i.input == "United States"));
    let cat = b.build("category", 0).unwrap();
    assert!(!cat
        .items
        .iter()
        .any(|i| i.input == "aardwolf" || i.input == "ice_cream" || i.input == "chicken"));
    let up = b.build("to_upper", 0).unwrap();
    assert!(up
        .items
        .iter()
        .all(|i| i.output == i.input.to_ascii_uppercase()));
    let same = b.build("same_category", 0).unwrap();
    assert!(same
        .items
        .iter()
        .all(|i| i.output == "yes" || i.output == "no"));
    let pick = b.build("pick_animal", 0).unwrap();
    assert!(pick
        .items
        .iter()
        .all(|i| i.input.split(", ").any(|w| w == i.output)));
}

#[test]
fn building_is_deterministic_for_a_seed() {
    let dz = freedict_dz();
    for name in ["antonym", "list_first", "same_category", "en_fr"] {
        let a = builder(dz.path()).build(name, 11).unwrap();
        let b = builder(dz.path()).build(name, 11).unwrap();
        assert_eq!(a, b, "{name}");
    }
    let a = builder(dz.path()).build("list_last", 1).unwrap();
    let b = builder(dz.path()).build("list_last", 2).unwrap();
    assert_ne!(a, b);
}

#[test]
fn a_missing_source_is_named() {
    let mut b = TaskBuilder::new(Sources::default());
    match b.build("en_fr", 0) {
        Err(TaskError::MissingSource {
            source_name: "freedict-eng-fra",
            ..
        }) => {}
        other => panic!("expected MissingSource, got {other:?}"),
    }
    assert!(b.build("next_letter", 0).is_ok(), "letters need no data");
}

#[test]
fn jsonl_round_trip() {
    let dz = freedict_dz();
    let set = builder(dz.path()).build("country_capital", 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("country_capital.jsonl");
    set.write_jsonl(&p).unwrap();
    let back = TaskSet::read_jsonl(&p).unwrap();
    assert_eq!(back, set);
    let first = std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(first.starts_with("{\"input\":") && first.contains("\"split\":"));
    std::fs::write(&p, "{\"input\": \"a\"}\n").unwrap();
    assert!(matches!(
        TaskSet::read_jsonl(&p),
        Err(TaskError::Parse { line: 1, .. })
    ));
}

#[test]
fn prompts_never_leak_the_answer() {
    let dz = freedict_dz();
    let mut b = builder(dz.path());
    for spec in TASKS {
        let set = b.build(spec.name, 5).unwrap();
        let k = 3;
        let prompts = sample_prompts(&set, Split::Test, k, 50, 9).unwrap();
        assert!(!prompts.is_empty());
        for p in &prompts {
            assert_eq!(p.query.split, Split::Test);
            assert_eq!(p.demos.len(), k);
            let text = p.prompt().text;
            assert!(text.ends_with(&format!("{} ->", p.query.input)));
            assert!(
                !text.contains(&format!("{} -> {}", p.query.input, p.query.output)),
                "{}: {text:?}",
                spec.name
            );
            for d in &p.demos {
                assert_eq!(d.split, Split::Train);
                assert!(!icl_tasks::prompt::leaks(d, &p.query));
                if spec.kind == icl_tasks::RuleKind::SingleDemonstration
                    && spec.name != "list_first"
                    && spec.name != "list_last"
                {
                    assert_ne!(
                        d.output, p.query.output,
                        "{}: the answer shown in a demonstration",
                        spec.name
                    );
                }
            }
        }
        // Dummy queries come from train and are never among their own demonstrations.
        for p in sample_prompts(&set, Split::Train, k, 20, 9).unwrap() {
            assert!(p.demos.iter().all(|d| d.input != p.query.input));
        }
    }
}

#[test]
fn prompt_sampling_is_deterministic_and_pairs_queries_across_k() {
    let dz = freedict_dz();
    let set = builder(dz.path()).build("antonym", 0).unwrap();
    let a = sample_prompts(&set, Split::Test, 3, 10, 4).unwrap();
    let b = sample_prompts(&set, Split::Test, 3, 10, 4).unwrap();
    assert_eq!(a, b);
    let z = sample_prompts(&set, Split::Test, 0, 10, 4).unwrap();
    assert_eq!(
        z.iter().map(|p| &p.query).collect::<Vec<_>>(),
        a.iter().map(|p| &p.query).collect::<Vec<_>>()
    );
    assert!(z.iter().all(|p| p.demos.is_empty()));
}
