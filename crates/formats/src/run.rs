//! The options a run folder was started with, compared with the options of a command that resumes
//! it.
//!
//! Why: `edm train` and `gdd train` resume from the checkpoint in their output folder. A resume
//! with another learning rate, batch or architecture used to continue silently with the saved
//! values ("everything else must match", checked nowhere), so the command line a user kept in
//! their notes no longer described the run. Both drivers now call [`compare_options`] with the
//! saved options and the given ones (each serialised to JSON by serde, so a new field is compared
//! without anyone listing it) and refuse a difference, naming every differing option.

use serde_json::Value;

/// Options of a resumed run that differ from the ones its folder was started with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("options differ from the saved run's: {}", describe(.changes))]
pub struct OptionsChanged {
    /// `(name, saved, given)` of every differing option, names dotted for nested options
    /// (`loss.p_mean`), in name order; a value missing on one side is `absent`.
    pub changes: Vec<(String, String, String)>,
}

impl OptionsChanged {
    /// The names of the differing options.
    pub fn names(&self) -> Vec<&str> {
        self.changes.iter().map(|(n, _, _)| n.as_str()).collect()
    }
}

fn describe(changes: &[(String, String, String)]) -> String {
    changes
        .iter()
        .map(|(n, saved, given)| format!("{n} (saved {saved}, given {given})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compares the options a run was saved with and the options of a command resuming it, leaf by
/// leaf (nested objects by dotted name). `allowed` lists the options that may change on resume (a
/// name also covers everything nested under it, `disc` covers `disc.seed`). Numbers compare by
/// value (`1` equals `1.0`). Returns every other difference.
pub fn compare_options(
    saved: &Value,
    given: &Value,
    allowed: &[&str],
) -> Result<(), OptionsChanged> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", saved, &mut a);
    flatten("", given, &mut b);
    let a: std::collections::BTreeMap<_, _> = a.into_iter().collect();
    let b: std::collections::BTreeMap<_, _> = b.into_iter().collect();
    let is_allowed = |name: &str| {
        allowed.iter().any(|p| {
            name == *p || (name.starts_with(p) && name.as_bytes().get(p.len()) == Some(&b'.'))
        })
    };
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut changes = Vec::new();
    for name in names {
        if is_allowed(name) {
            continue;
        }
        let (x, y) = (a.get(name), b.get(name));
        let same = match (x, y) {
            (Some(Value::Number(p)), Some(Value::Number(q))) => p.as_f64() == q.as_f64(),
            (p, q) => p == q,
        };
        if !same {
            let show = |v: Option<&&Value>| v.map_or("absent".to_string(), |v| v.to_string());
            changes.push((name.clone(), show(x), show(y)));
        }
    }
    if changes.is_empty() {
        Ok(())
    } else {
        Err(OptionsChanged { changes })
    }
}

/// Leaves of a JSON value by dotted name (an empty object or an array is one leaf).
fn flatten<'a>(prefix: &str, v: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, out);
            }
        }
        _ => out.push((prefix.to_string(), v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_are_named_and_allowed_ones_pass() {
        let saved = json!({"lr": 0.001, "batch": 64, "kimg": 10.0, "loss": {"p_mean": -1.2, "p_std": 1.2}, "old": true});
        let same = json!({"lr": 1e-3, "batch": 64.0, "kimg": 10.0, "loss": {"p_mean": -1.2, "p_std": 1.2}, "old": true});
        assert_eq!(compare_options(&saved, &same, &[]), Ok(()));
        let given = json!({"lr": 0.002, "batch": 64, "kimg": 20.0, "loss": {"p_mean": -1.0, "p_std": 1.2}, "new": 1});
        let err = compare_options(&saved, &given, &["kimg"]).unwrap_err();
        assert_eq!(err.names(), ["loss.p_mean", "lr", "new", "old"]);
        let msg = err.to_string();
        assert!(msg.contains("lr (saved 0.001, given 0.002)"), "{msg}");
        assert!(msg.contains("old (saved true, given absent)"), "{msg}");
        // A prefix allows what is nested under it, not a longer name that starts the same way.
        assert_eq!(
            compare_options(&saved, &given, &["kimg", "lr", "loss", "new", "old"]),
            Ok(())
        );
        let err = compare_options(&json!({"lr2": 1}), &json!({"lr2": 2}), &["lr"]).unwrap_err();
        assert_eq!(err.names(), ["lr2"]);
    }
}
