//! Comma-separated lists over a closed set of names (`--task antonym,capital`, `--dummies
//! rotated,shuffled`), checked by clap while parsing: a bad name is clap's own "invalid value"
//! error (exit code 2, before any model is loaded), and `--help` lists the choices.

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};

/// A value parser for `a,b,c` where every item is one of `choices`; the value stays the
/// comma-separated string (whitespace around items trimmed).
#[derive(Clone, Debug)]
pub struct CommaList {
    choices: Vec<&'static str>,
}

impl CommaList {
    pub fn new(choices: impl IntoIterator<Item = &'static str>) -> Self {
        Self {
            choices: choices.into_iter().collect(),
        }
    }
}

impl TypedValueParser for CommaList {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let invalid = |shown: String| {
            let mut e = clap::Error::new(ErrorKind::InvalidValue).with_cmd(cmd);
            if let Some(arg) = arg {
                e.insert(
                    ContextKind::InvalidArg,
                    ContextValue::String(arg.to_string()),
                );
            }
            e.insert(ContextKind::InvalidValue, ContextValue::String(shown));
            e.insert(
                ContextKind::ValidValue,
                ContextValue::Strings(self.choices.iter().map(|c| c.to_string()).collect()),
            );
            e
        };
        let s = value
            .to_str()
            .ok_or_else(|| invalid(value.to_string_lossy().into_owned()))?;
        let items: Vec<&str> = s.split(',').map(str::trim).collect();
        if let Some(bad) = items.iter().find(|i| !self.choices.contains(i)) {
            return Err(invalid(bad.to_string()));
        }
        Ok(items.join(","))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            self.choices.iter().map(|c| PossibleValue::new(*c)),
        ))
    }
}

/// `--task`: the built-in task names, and `all`.
pub fn task_list() -> CommaList {
    CommaList::new(
        icl_tasks::TASKS
            .iter()
            .map(|t| t.name)
            .chain(std::iter::once("all")),
    )
}

/// `--task` of `demo`: one built-in task.
pub fn one_task() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(icl_tasks::TASKS.iter().map(|t| t.name))
}

/// `--dummies` of `run transplant`.
pub fn dummy_list() -> CommaList {
    CommaList::new(["rotated", "shuffled", "random-labels"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: &CommaList, s: &str) -> Result<String, clap::Error> {
        p.parse_ref(&clap::Command::new("t"), None, std::ffi::OsStr::new(s))
    }

    #[test]
    fn lists_are_checked_item_by_item() {
        let p = dummy_list();
        assert_eq!(parse(&p, "rotated, shuffled").unwrap(), "rotated,shuffled");
        let e = parse(&p, "rotated,sideways").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidValue);
        // The rendered message (with the flag's name) is checked by tests/cli.rs.
        assert!(parse(&task_list(), "all").is_ok());
        assert!(parse(&task_list(), "no_such_task").is_err());
    }
}
