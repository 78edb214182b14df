//! `icl-probe report DIR`: collects every result JSON under `DIR` (any depth), writes
//! `DIR/report.md` with the tables and `DIR/plots/*.png`. Folders named `cache` are skipped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::answer_sites::AnswerSiteResult;
use super::baseline::AccuracyResult;
use super::cache::{read_json, sanitize};
use super::knockout::KnockoutResult;
use super::pca::PcaResult;
use super::plot::{layer_plot, scatter_plot, Series};
use super::rule_vector::RuleVectorResult;
use super::task_vector::{LayerCurve, TaskVectorResult};
use super::{ExperimentError, Result};

/// (model, task, k): one row of the task-vector vs rule-vector table.
type RowKey = (String, String, usize);

/// All results found under a folder.
#[derive(Default, Debug)]
pub struct Results {
    pub accuracy: Vec<AccuracyResult>,
    pub task_vector: Vec<TaskVectorResult>,
    pub rule_vector: Vec<RuleVectorResult>,
    pub answer_sites: Vec<AnswerSiteResult>,
    pub knockout: Vec<KnockoutResult>,
    pub pca: Vec<PcaResult>,
    /// Summaries of the resumable experiments (`transplant`, `local-global`, `forms`, `dpca`,
    /// `saliency`): their JSON files, whose sibling `.md` tables the report includes.
    pub summaries: Vec<PathBuf>,
}

/// Experiments that write their own summary JSON and Markdown tables next to it.
pub const SUMMARY_EXPERIMENTS: [&str; 5] =
    ["transplant", "local-global", "forms", "dpca", "saliency"];

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| ExperimentError::Io {
        path: dir.into(),
        source: e,
    })?;
    for ent in rd {
        let p = ent
            .map_err(|e| ExperimentError::Io {
                path: dir.into(),
                source: e,
            })?
            .path();
        if p.is_dir() {
            // The result cache holds copies of the results: skip it.
            if p.file_name().is_some_and(|n| n != "cache") {
                walk(&p, out)?;
            }
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads every JSON file with an `experiment` field; other JSON files are ignored.
pub fn collect(dir: &Path) -> Result<Results> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    let mut r = Results::default();
    for f in files {
        let v: serde_json::Value = read_json(&f)?;
        let json_err = |e| ExperimentError::Json {
            path: f.clone(),
            source: e,
        };
        match v.get("experiment").and_then(|e| e.as_str()) {
            Some("baseline") | Some("icl") => r
                .accuracy
                .push(serde_json::from_value(v).map_err(json_err)?),
            Some("task-vector") => r
                .task_vector
                .push(serde_json::from_value(v).map_err(json_err)?),
            Some("rule-vector") => r
                .rule_vector
                .push(serde_json::from_value(v).map_err(json_err)?),
            Some("rule-vector-sites") => r
                .answer_sites
                .push(serde_json::from_value(v).map_err(json_err)?),
            Some("knockout") => r
                .knockout
                .push(serde_json::from_value(v).map_err(json_err)?),
            Some("pca") => r.pca.push(serde_json::from_value(v).map_err(json_err)?),
            Some(e) if SUMMARY_EXPERIMENTS.contains(&e) => r.summaries.push(f),
            _ => {}
        }
    }
    Ok(r)
}

fn pct(x: f64) -> String {
    format!("{:.0}", 100.0 * x)
}

fn kind(task: &str) -> &'static str {
    match icl_tasks::task_spec(task).map(|s| s.kind) {
        Ok(icl_tasks::RuleKind::SingleDemonstration) => "single",
        Ok(icl_tasks::RuleKind::MultiDemonstration) => "multi",
        Err(_) => "?",
    }
}

fn curve<'a>(curves: &'a [LayerCurve], name: &str) -> Option<&'a LayerCurve> {
    curves.iter().find(|c| c.name == name)
}

fn cell(c: Option<&LayerCurve>) -> String {
    c.map_or("–".into(), |c| {
        format!("{} (L{})", pct(c.test_at_best), c.best_layer)
    })
}

/// Writes `report.md` and the plots; returns the Markdown.
pub fn write_report(dir: &Path) -> Result<String> {
    let r = collect(dir)?;
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| ExperimentError::Io {
        path: plots.clone(),
        source: e,
    })?;
    let mut md = String::new();
    let models: std::collections::BTreeSet<&str> = r
        .accuracy
        .iter()
        .map(|a| a.model.as_str())
        .chain(r.rule_vector.iter().map(|a| a.model.as_str()))
        .chain(r.task_vector.iter().map(|a| a.model.as_str()))
        .collect();
    let _ = writeln!(md, "# ICL probe report\n");
    let _ = writeln!(md, "Model(s): {}. Accuracies in % on the test queries; `(L n)` = the layer chosen on dev. Layer L = 0 is the embedding output, L = l the output of block l−1.\n", models.into_iter().collect::<Vec<_>>().join(", "));

    // 1. Zero-shot and ICL.
    let mut acc: BTreeMap<(String, String), BTreeMap<usize, (f64, usize)>> = BTreeMap::new();
    for a in &r.accuracy {
        let e = acc.entry((a.model.clone(), a.task.clone())).or_default();
        for s in &a.shots {
            e.insert(s.k, (s.accuracy, s.n));
        }
    }
    if !acc.is_empty() {
        let ks: std::collections::BTreeSet<usize> =
            acc.values().flat_map(|m| m.keys().copied()).collect();
        let _ = writeln!(md, "## 1. Zero-shot and in-context accuracy\n");
        let _ = write!(md, "| model | task | rule | n |");
        for k in &ks {
            let _ = write!(
                md,
                " {} |",
                if *k == 0 {
                    "zero-shot".to_string()
                } else {
                    format!("k={k}")
                }
            );
        }
        let _ = write!(md, "\n|---|---|---|---|");
        for _ in &ks {
            let _ = write!(md, "---|");
        }
        md.push('\n');
        for ((model, task), m) in &acc {
            let n = m.values().map(|v| v.1).max().unwrap_or(0);
            let _ = write!(md, "| {model} | {task} | {} | {n} |", kind(task));
            for k in &ks {
                let _ = write!(md, " {} |", m.get(k).map_or("–".into(), |v| pct(v.0)));
            }
            md.push('\n');
        }
        md.push('\n');
    }

    // 2. Task vectors vs rule vectors.
    let mut rows: BTreeMap<RowKey, (f64, f64, Vec<LayerCurve>)> = BTreeMap::new();
    for t in &r.task_vector {
        let e = rows
            .entry((t.model.clone(), t.task.clone(), t.k))
            .or_insert((t.zero_shot, t.icl, Vec::new()));
        e.2.extend(t.curves.iter().cloned());
    }
    for t in &r.rule_vector {
        let e = rows
            .entry((t.model.clone(), t.task.clone(), t.k))
            .or_insert((t.zero_shot, t.icl, Vec::new()));
        for c in &t.curves {
            if !e.2.iter().any(|x| x.name == c.name) {
                e.2.push(c.clone());
            }
        }
    }
    for t in &r.answer_sites {
        let e = rows
            .entry((t.model.clone(), t.task.clone(), t.k))
            .or_insert((t.zero_shot, t.icl, Vec::new()));
        if !e.2.iter().any(|x| x.name == t.curve.name) {
            e.2.push(t.curve.clone());
        }
    }
    if !rows.is_empty() {
        let _ = writeln!(md, "## 2. Task vector vs rule vectors\n");
        let _ = writeln!(md, "Task vectors and rule vectors patched into the zero-shot query's last position, and (last column) rule vectors written back at the answer positions of dummy demonstrations (section 3b). Test accuracy in % at the layer chosen on dev.\n");
        let _ = writeln!(md, "| model | task | rule | k | zero-shot | ICL | task vector (mean) | task vector (per prompt) | rule vector (mean of k) | rule vector (single) | rule vectors at answer positions |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
        for ((model, task, k), (z, icl, curves)) in &rows {
            let _ = writeln!(
                md,
                "| {model} | {task} | {} | {k} | {} | {} | {} | {} | {} | {} | {} |",
                kind(task),
                pct(*z),
                pct(*icl),
                cell(curve(curves, "task vector (mean)")),
                cell(curve(curves, "task vector (per prompt)")),
                cell(curve(curves, "rule vector (mean of k)")),
                cell(curve(curves, "rule vector (single)")),
                cell(curve(curves, "rule vectors at answer positions (all k)")),
            );
            let file = format!("{}_{}_k{k}_layers.png", sanitize(model), sanitize(task));
            let series: Vec<Series> = curves
                .iter()
                .map(|c| Series {
                    name: c.name.clone(),
                    points: c
                        .layers
                        .iter()
                        .zip(&c.test)
                        .map(|(&l, &a)| (l as f64, a))
                        .collect(),
                })
                .collect();
            layer_plot(
                &plots.join(&file),
                &format!("{task} ({model}), test accuracy, k={k}"),
                &series,
                &[("zero-shot".into(), *z), (format!("ICL k={k}"), *icl)],
            )?;
        }
        md.push('\n');
    }

    // 3. Rule-vector aggregation.
    if !r.rule_vector.is_empty() {
        let _ = writeln!(md, "## 3. Rule vectors: accuracy by number aggregated (test, at the layer chosen on dev)\n");
        let kmax = r.rule_vector.iter().map(|x| x.k).max().unwrap_or(0);
        let _ = write!(md, "| model | task | rule | L |");
        for s in 1..=kmax {
            let _ = write!(md, " {s} |");
        }
        let _ = writeln!(md, " singles (demo 1..k) | leave one out (demo 1..k) |");
        let _ = write!(md, "|---|---|---|---|");
        for _ in 1..=kmax {
            let _ = write!(md, "---|");
        }
        let _ = writeln!(md, "---|---|");
        for x in &r.rule_vector {
            let _ = write!(
                md,
                "| {} | {} | {} | {} |",
                x.model,
                x.task,
                kind(&x.task),
                x.layer
            );
            for s in 1..=kmax {
                let v = x
                    .by_size
                    .iter()
                    .find(|b| b.size == s)
                    .map_or("–".into(), |b| pct(b.accuracy));
                let _ = write!(md, " {v} |");
            }
            let list = |v: &[super::rule_vector::SubsetAccuracy]| {
                v.iter()
                    .map(|b| pct(b.accuracy))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let _ = writeln!(md, " {} | {} |", list(&x.singles), list(&x.leave_one_out));
        }
        md.push('\n');
    }

    // 3b. Rule vectors written back at answer positions.
    if !r.answer_sites.is_empty() {
        let _ = writeln!(
            md,
            "## 3b. Rule vectors written back at the answer positions of dummy demonstrations
"
        );
        let _ = writeln!(md, "Dummy prompt: the extraction prompt's demonstration inputs with their outputs rotated by one, then the real query. At layer L the residual at each dummy answer position j is replaced by rule vector r_j (read at the same layer and position of the real demonstrations). Columns `s = n`: n of the k rule vectors written back (random subsets; s = 0 is the dummy prompt itself). Test accuracy in %.\n");
        let kmax = r.answer_sites.iter().map(|x| x.k).max().unwrap_or(0);
        let _ = write!(
            md,
            "| model | task | rule | zero-shot | ICL | best L (all k) |"
        );
        for s in 0..=kmax {
            let _ = write!(md, " s={s} |");
        }
        let _ = write!(md, "\n|---|---|---|---|---|---|");
        for _ in 0..=kmax {
            let _ = write!(md, "---|");
        }
        md.push('\n');
        for x in &r.answer_sites {
            let _ = write!(
                md,
                "| {} | {} | {} | {} | {} | {} (L{}) |",
                x.model,
                x.task,
                kind(&x.task),
                pct(x.zero_shot),
                pct(x.icl),
                pct(x.curve.test_at_best),
                x.layer
            );
            for s in 0..=kmax {
                let v = x
                    .by_count
                    .iter()
                    .find(|b| b.size == s)
                    .map_or("–".into(), |b| pct(b.accuracy));
                let _ = write!(md, " {v} |");
            }
            md.push('\n');
        }
        md.push('\n');
        let _ = writeln!(md, "Per layer (test accuracy with all k written back):\n");
        for x in &r.answer_sites {
            let cells: Vec<String> = x
                .curve
                .layers
                .iter()
                .zip(&x.curve.test)
                .map(|(l, a)| format!("L{l} {}", pct(*a)))
                .collect();
            let _ = writeln!(md, "- {} / {}: {}", x.model, x.task, cells.join(", "));
        }
        md.push('\n');
    }

    // 4. Knockout.
    if !r.knockout.is_empty() {
        let _ = writeln!(md, "## 4. Attention knockout: last position → answer positions (control: → random input tokens)\n");
        let _ = writeln!(md, "Accuracy with the edges blocked in all heads of blocks [start, end); `answer / control`.\n");
        let windows: Vec<(usize, usize)> = r.knockout[0]
            .windows
            .iter()
            .map(|w| (w.start, w.end))
            .collect();
        let _ = write!(md, "| model | task | zero-shot | ICL |");
        for (a, b) in &windows {
            let _ = write!(md, " blocks {a}–{} |", b - 1);
        }
        let _ = write!(md, "\n|---|---|---|---|");
        for _ in &windows {
            let _ = write!(md, "---|");
        }
        md.push('\n');
        for x in &r.knockout {
            let _ = write!(
                md,
                "| {} | {} | {} | {} |",
                x.model,
                x.task,
                pct(x.zero_shot),
                pct(x.icl)
            );
            for w in &x.windows {
                let _ = write!(md, " {} / {} |", pct(w.answer), pct(w.control));
            }
            md.push('\n');
        }
        md.push('\n');
    }

    // 5. PCA.
    for (i, p) in r.pca.iter().enumerate() {
        let _ = writeln!(
            md,
            "## 5. Geometry of rule vectors (layer {}, k = {}, {})\n",
            p.layer, p.k, p.model
        );
        let _ = writeln!(
            md,
            "{} rule vectors of {} tasks. Variance explained by the task label (R²): {:.2}; leave-one-out nearest-centroid accuracy of the task: {}%. First principal components explain {}.\n",
            p.points.len(),
            p.tasks.len(),
            p.r2_task,
            pct(p.centroid_accuracy),
            p.explained.iter().take(3).map(|e| format!("{:.0}%", 100.0 * e)).collect::<Vec<_>>().join(", ")
        );
        let _ = writeln!(
            md,
            "| task | R² of the demonstration index within the task |\n|---|---|"
        );
        for (t, r2) in &p.r2_demo_index {
            let _ = writeln!(md, "| {t} | {r2:.2} |");
        }
        let file = format!("pca_{i}_L{}.png", p.layer);
        let names = p.tasks.clone();
        let pts: Vec<(f64, f64)> = p.points.iter().map(|q| (q.pc[0], q.pc[1])).collect();
        let groups: Vec<usize> = p
            .points
            .iter()
            .map(|q| names.iter().position(|n| *n == q.task).unwrap_or(0))
            .collect();
        scatter_plot(
            &plots.join(&file),
            &format!("rule vectors, layer {}, PC1/PC2", p.layer),
            &pts,
            &groups,
            &names,
        )?;
        let _ = writeln!(md, "\n![PCA of rule vectors](plots/{file})\n");
    }

    if !rows.is_empty() {
        let _ = writeln!(md, "## Plots: accuracy per layer (test)\n");
        for (model, task, k) in rows.keys() {
            let file = format!("{}_{}_k{k}_layers.png", sanitize(model), sanitize(task));
            let _ = writeln!(md, "![{task}](plots/{file})\n");
        }
    }
    // The resumable experiments' own tables, with their plot links made relative to `dir`.
    for f in &r.summaries {
        let table = f.with_extension("md");
        let Ok(text) = std::fs::read_to_string(&table) else {
            continue;
        };
        let rel = f
            .parent()
            .and_then(|p| p.strip_prefix(dir).ok())
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        let prefix = if rel.is_empty() {
            "plots/".to_string()
        } else {
            format!("{rel}/plots/")
        };
        let _ = writeln!(md, "{}\n", text.replace("](plots/", &format!("]({prefix}")));
    }
    let path = dir.join("report.md");
    std::fs::write(&path, &md).map_err(|e| ExperimentError::Io { path, source: e })?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer_sites::AnswerSiteResult;
    use crate::rule_vector::SubsetAccuracy;

    #[test]
    fn answer_site_results_make_their_tables_and_plot() {
        let dir = tempfile::tempdir().unwrap();
        let curve = LayerCurve::new(
            "rule vectors at answer positions (all k)",
            vec![0, 6, 12],
            vec![0.5, 0.9, 0.7],
            vec![0.4, 0.8, 0.6],
        );
        let r = AnswerSiteResult {
            experiment: "rule-vector-sites".into(),
            model: "m".into(),
            task: "category".into(),
            k: 2,
            seed: 0,
            n_dev: 2,
            n_test: 5,
            zero_shot: 0.0,
            icl: 0.6,
            dummy: 0.2,
            layer: curve.best_layer,
            curve,
            by_count: (0..=2)
                .map(|s| SubsetAccuracy {
                    size: s,
                    accuracy: [0.2, 0.5, 0.8][s],
                })
                .collect(),
        };
        crate::cache::write_json(&dir.path().join("m_category_sites.json"), &r).unwrap();
        let md = write_report(dir.path()).unwrap();
        assert!(md.contains("## 3b."), "{md}");
        assert!(
            md.contains("| m | category | multi | 0 | 60 | 80 (L6) | 20 | 50 | 80 |"),
            "{md}"
        );
        // Section 2 carries the answer-site column (the other experiments are absent here).
        assert!(md.contains("| – | – | – | – | 80 (L6) |"), "{md}");
        assert!(dir.path().join("plots/m_category_k2_layers.png").exists());
    }
}
