//! `[Match]`, `[TriggerMatch]`, `[Assert]` and `[TriggerAssert]` sections.
//!
//! Within a section every condition must hold, except conditions prefixed with
//! `|` (triggering): when a section has any, at least one of them must hold. A
//! condition's value may be negated with `!` and may list several alternatives
//! separated by whitespace, of which one must match; values are globs. All
//! `[Match]` sections of a file must hold; of its `[TriggerMatch]` sections, at
//! least one. `[Assert]` works like `[Match]` but fails the build instead of
//! skipping the file.

use std::cmp::Ordering;
use std::path::Path;

use super::error::ErrorKind;
use super::ini::{Entry, Section};

/// The names of the condition sections.
pub const SECTIONS: &[&str] = &["Match", "TriggerMatch", "Assert", "TriggerAssert"];

/// The conditions the builder evaluates.
pub const CONDITIONS: &[&str] = &[
    "Distribution",
    "Release",
    "Architecture",
    "Profiles",
    "ImageId",
    "ImageVersion",
    "Format",
    "PathExists",
    "Environment",
    "HostArchitecture",
    "ToolsTreeDistribution",
    "ToolsTreeRelease",
    "Repositories",
    "Bootable",
    "BuildSources",
    "Image",
];

/// What conditions are evaluated against: the configuration as resolved so far.
pub trait Facts {
    /// The current (or default) value of a single-value setting.
    fn setting(&self, name: &str) -> Option<String>;
    /// The selected profiles.
    fn profiles(&self) -> Vec<String>;
    /// A variable from `Environment=` or `--set`.
    fn environment(&self, key: &str) -> Option<String>;
    /// The architecture of the machine running the builder.
    fn host_architecture(&self) -> String;
    /// The current value of a list setting.
    fn list(&self, name: &str) -> Vec<String>;
    /// The image being read: `main`, or the sub-image's name in `mkosi.images/`.
    fn image(&self) -> String;
}

/// The outcome of a file's condition sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Apply,
    /// A `[Match]`/`[TriggerMatch]` failed: the file (or directory) is skipped.
    Skip,
    /// An `[Assert]`/`[TriggerAssert]` failed, at this line.
    AssertionFailed {
        line: usize,
        condition: String,
    },
}

/// Evaluates every condition section of a file. `expand` applies specifiers to a
/// condition value; `base` is the file's directory (for `PathExists=`).
pub fn evaluate(
    sections: &[Section],
    facts: &dyn Facts,
    base: &Path,
    expand: &dyn Fn(&str) -> Result<String, ErrorKind>,
) -> Result<Outcome, (usize, ErrorKind)> {
    let mut triggers = (false, false); // (any TriggerMatch, one of them held)
    let mut assert_triggers = (false, false, 0usize);
    for section in sections {
        let kind = section.name.as_str();
        if !SECTIONS.contains(&kind) {
            continue;
        }
        let held = section_holds(section, facts, base, expand)?;
        match kind {
            "Match" if !held => return Ok(Outcome::Skip),
            "TriggerMatch" => triggers = (true, triggers.1 || held),
            "Assert" if !held => {
                return Ok(Outcome::AssertionFailed {
                    line: section.line,
                    condition: describe(section),
                })
            }
            "TriggerAssert" => {
                assert_triggers = (true, assert_triggers.1 || held, section.line);
            }
            _ => {}
        }
    }
    if triggers.0 && !triggers.1 {
        return Ok(Outcome::Skip);
    }
    if assert_triggers.0 && !assert_triggers.1 {
        return Ok(Outcome::AssertionFailed {
            line: assert_triggers.2,
            condition: "no [TriggerAssert] section holds".to_owned(),
        });
    }
    Ok(Outcome::Apply)
}

fn describe(section: &Section) -> String {
    let conditions: Vec<String> = section
        .entries
        .iter()
        .map(|e| format!("{}={}", e.key, e.value))
        .collect();
    format!("[{}] {}", section.name, conditions.join(" "))
}

fn section_holds(
    section: &Section,
    facts: &dyn Facts,
    base: &Path,
    expand: &dyn Fn(&str) -> Result<String, ErrorKind>,
) -> Result<bool, (usize, ErrorKind)> {
    let mut any_trigger = false;
    let mut triggered = false;
    for entry in &section.entries {
        let value = expand(&entry.value).map_err(|e| (entry.line, e))?;
        let (trigger, held) = condition(entry, &value, facts, base, &section.name)?;
        if trigger {
            any_trigger = true;
            triggered |= held;
        } else if !held {
            return Ok(false);
        }
    }
    Ok(!any_trigger || triggered)
}

fn condition(
    entry: &Entry,
    value: &str,
    facts: &dyn Facts,
    base: &Path,
    section: &str,
) -> Result<(bool, bool), (usize, ErrorKind)> {
    let invalid = |reason: &str| {
        (
            entry.line,
            ErrorKind::InvalidValue {
                key: entry.key.clone(),
                reason: reason.to_owned(),
            },
        )
    };
    let value = value.trim();
    let (trigger, value) = match value.strip_prefix('|') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, value),
    };
    let (negate, value) = match value.strip_prefix('!') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, value),
    };
    if value.is_empty() {
        return Err(invalid("a condition needs a value"));
    }
    let alternatives: Vec<&str> = value.split_whitespace().collect();
    let glob_any = |current: Option<String>| -> Result<bool, (usize, ErrorKind)> {
        let Some(current) = current else {
            return Ok(false);
        };
        for alt in &alternatives {
            if glob_match(alt, &current).map_err(|e| invalid(&e))? {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let held = match entry.key.as_str() {
        "Distribution"
        | "Release"
        | "Architecture"
        | "Format"
        | "ImageId"
        | "ToolsTreeDistribution"
        | "ToolsTreeRelease" => glob_any(facts.setting(&entry.key))?,
        "HostArchitecture" => glob_any(Some(facts.host_architecture()))?,
        "Image" => glob_any(Some(facts.image()))?,
        "Repositories" => {
            let enabled = facts.list("Repositories");
            alternatives
                .iter()
                .any(|alt| enabled.iter().any(|r| r == alt))
        }
        "Bootable" => {
            let current = facts.setting("Bootable").unwrap_or_else(|| "auto".into());
            alternatives
                .iter()
                .any(|alt| feature(alt).is_some_and(|f| Some(f) == feature(&current)))
        }
        "BuildSources" => {
            let targets: Vec<String> = facts
                .list("BuildSources")
                .iter()
                .filter_map(|item| item.split_once(':'))
                .map(|(_, target)| target.trim_matches('/').to_owned())
                .collect();
            alternatives
                .iter()
                .any(|alt| targets.iter().any(|t| t == alt.trim_matches('/')))
        }
        "ImageVersion" => {
            let current = facts.setting("ImageVersion");
            let mut held = false;
            for alt in &alternatives {
                held |= match version_comparison(alt) {
                    Some((op, wanted)) => current
                        .as_deref()
                        .is_some_and(|c| op(compare_versions(c, wanted))),
                    None => glob_any(current.clone())?,
                };
            }
            held
        }
        "Profiles" => {
            let selected = facts.profiles();
            let mut held = false;
            for profile in selected {
                held |= glob_any(Some(profile))?;
            }
            held
        }
        "PathExists" => alternatives.iter().any(|p| base.join(p).exists()),
        "Environment" => alternatives.iter().any(|alt| match alt.split_once('=') {
            Some((key, wanted)) => facts.environment(key).as_deref() == Some(wanted),
            None => facts.environment(alt).is_some(),
        }),
        _ => {
            return Err((
                entry.line,
                ErrorKind::UnknownCondition {
                    section: section.to_owned(),
                    key: entry.key.clone(),
                },
            ))
        }
    };
    Ok((trigger, held != negate))
}

/// A boolean-or-`auto` value: `Some(None)` is `auto`.
fn feature(value: &str) -> Option<Option<bool>> {
    match value {
        "auto" => Some(None),
        "enabled" => Some(Some(true)),
        "disabled" => Some(Some(false)),
        other => super::value::parse_bool(other).map(Some),
    }
}

fn glob_match(pattern: &str, value: &str) -> Result<bool, String> {
    if !pattern.contains(['*', '?', '[']) {
        return Ok(pattern == value);
    }
    glob::Pattern::new(pattern)
        .map(|p| p.matches(value))
        .map_err(|e| format!("invalid glob {pattern:?}: {e}"))
}

type Comparison = fn(Ordering) -> bool;

fn version_comparison(alt: &str) -> Option<(Comparison, &str)> {
    const OPS: &[(&str, Comparison)] = &[
        (">=", |o| o != Ordering::Less),
        ("<=", |o| o != Ordering::Greater),
        ("==", |o| o == Ordering::Equal),
        ("!=", |o| o != Ordering::Equal),
        (">", |o| o == Ordering::Greater),
        ("<", |o| o == Ordering::Less),
    ];
    OPS.iter()
        .find_map(|(prefix, op)| alt.strip_prefix(prefix).map(|rest| (*op, rest)))
}

/// Compares versions the way people read them: runs of digits numerically,
/// everything else character by character ("1.10" > "1.9").
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let da = trim_zeros(&a[..na]);
                let db = trim_zeros(&b[..nb]);
                let order = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ini;

    struct Fixed;
    impl Facts for Fixed {
        fn setting(&self, name: &str) -> Option<String> {
            match name {
                "Distribution" => Some("debian".into()),
                "Release" => Some("bookworm".into()),
                "ImageVersion" => Some("1.10".into()),
                _ => None,
            }
        }
        fn profiles(&self) -> Vec<String> {
            vec!["worker".into()]
        }
        fn environment(&self, key: &str) -> Option<String> {
            (key == "CI").then(|| "true".into())
        }
        fn host_architecture(&self) -> String {
            "x86-64".into()
        }
        fn list(&self, name: &str) -> Vec<String> {
            match name {
                "Repositories" => vec!["main".into(), "contrib".into()],
                "BuildSources" => vec!["/src/kernel:kernel".into()],
                _ => Vec::new(),
            }
        }
        fn image(&self) -> String {
            "main".into()
        }
    }

    fn outcome(text: &str) -> Outcome {
        let sections = ini::parse(text).unwrap();
        evaluate(&sections, &Fixed, Path::new("/"), &|v| Ok(v.to_owned())).unwrap()
    }

    #[test]
    fn match_semantics() {
        assert_eq!(outcome("[Match]\nDistribution=debian"), Outcome::Apply);
        assert_eq!(outcome("[Match]\nDistribution=fedora"), Outcome::Skip);
        assert_eq!(outcome("[Match]\nDistribution=!fedora"), Outcome::Apply);
        assert_eq!(
            outcome("[Match]\nDistribution=fedora debian"),
            Outcome::Apply
        );
        assert_eq!(outcome("[Match]\nRelease=book*"), Outcome::Apply);
        assert_eq!(
            outcome("[Match]\nDistribution=debian\nRelease=sid"),
            Outcome::Skip
        );
        assert_eq!(
            outcome("[Match]\nDistribution=|fedora\nRelease=|bookworm"),
            Outcome::Apply
        );
        assert_eq!(
            outcome("[Match]\nDistribution=|fedora\nRelease=|sid"),
            Outcome::Skip
        );
        assert_eq!(outcome("[Match]\nProfiles=work*"), Outcome::Apply);
        assert_eq!(outcome("[Match]\nImageId=x"), Outcome::Skip);
        assert_eq!(outcome("[Match]\nImageVersion=>=1.9"), Outcome::Apply);
        assert_eq!(outcome("[Match]\nImageVersion=<1.9"), Outcome::Skip);
        assert_eq!(outcome("[Match]\nEnvironment=CI=true"), Outcome::Apply);
        assert_eq!(outcome("[Match]\nEnvironment=!CI"), Outcome::Skip);
        assert_eq!(outcome("[Match]\nPathExists=/"), Outcome::Apply);
        assert_eq!(
            outcome("[TriggerMatch]\nDistribution=fedora\n[TriggerMatch]\nDistribution=debian"),
            Outcome::Apply
        );
        assert_eq!(
            outcome("[Match]\nDistribution=debian\n[Match]\nRelease=sid"),
            Outcome::Skip
        );
        assert!(matches!(
            outcome("[Assert]\nDistribution=fedora"),
            Outcome::AssertionFailed { line: 1, .. }
        ));
    }

    /// The conditions mkosi 26 added or the builder lacked (issue 18).
    #[test]
    fn newer_conditions() {
        let cases = [
            ("Repositories=contrib", Outcome::Apply),
            ("Repositories=non-free", Outcome::Skip),
            ("Bootable=auto", Outcome::Apply),
            ("Bootable=yes", Outcome::Skip),
            ("BuildSources=/kernel", Outcome::Apply),
            ("Image=main", Outcome::Apply),
            ("Image=initrd", Outcome::Skip),
        ];
        for (condition, expected) in cases {
            assert_eq!(
                outcome(&format!("[Match]\n{condition}")),
                expected,
                "{condition}"
            );
        }
    }

    #[test]
    fn unknown_condition_is_an_error() {
        let sections = ini::parse("[Match]\nColour=blue").unwrap();
        let err = evaluate(&sections, &Fixed, Path::new("/"), &|v| Ok(v.to_owned())).unwrap_err();
        assert!(matches!(err, (2, ErrorKind::UnknownCondition { .. })));
    }

    #[test]
    fn versions() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("1.009", "1.9"), Ordering::Equal);
        assert_eq!(compare_versions("1.0", "1.0.1"), Ordering::Less);
    }
}
