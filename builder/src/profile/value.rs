//! Typed setting values and how one assignment changes them.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::error::ErrorKind;
use super::settings::{Kind, Setting, Split, COMPRESSIONS};

/// A resolved setting value, serialized as mkosi's JSON summary spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Text(String),
    Bool(bool),
    Int(u64),
    List(Vec<String>),
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_list(&self) -> &[String] {
        match self {
            Value::List(items) => items,
            _ => &[],
        }
    }

    /// The value as one line of text (lists joined with spaces).
    pub fn display(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
            Value::Int(i) => i.to_string(),
            Value::List(items) => items.join(" "),
        }
    }
}

/// What one assignment does to a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// An empty assignment: back to the default (lists: cleared).
    Reset,
    /// A single-value setting takes this value (last assignment wins).
    Set(Value),
    /// A list setting gets these items appended.
    Append(Vec<String>),
}

/// mkosi's boolean words.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// Parses the raw (specifier-expanded) value of one assignment. Relative paths
/// are resolved against `base`, the directory of the file holding the assignment.
pub fn parse_update(setting: &Setting, raw: &str, base: &Path) -> Result<Update, ErrorKind> {
    let key = setting.name;
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(Update::Reset);
    }
    let update = match setting.kind {
        Kind::Text => Update::Set(Value::Text(raw.to_owned())),
        Kind::Bool => Update::Set(Value::Bool(parse_bool(raw).ok_or_else(|| {
            ErrorKind::InvalidBool {
                key: key.to_owned(),
                value: raw.to_owned(),
            }
        })?)),
        Kind::Int => Update::Set(Value::Int(raw.parse().map_err(|_| {
            ErrorKind::InvalidInt {
                key: key.to_owned(),
                value: raw.to_owned(),
            }
        })?)),
        Kind::Enum(choices) => {
            if !choices.contains(&raw) {
                return Err(ErrorKind::InvalidEnum {
                    key: key.to_owned(),
                    value: raw.to_owned(),
                    expected: choices.join(", "),
                });
            }
            Update::Set(Value::Text(raw.to_owned()))
        }
        Kind::Compression => {
            let algorithm = match parse_bool(raw) {
                Some(true) => "zstd",
                Some(false) => "none",
                None if COMPRESSIONS.contains(&raw) => raw,
                None => {
                    return Err(ErrorKind::InvalidEnum {
                        key: key.to_owned(),
                        value: raw.to_owned(),
                        expected: format!("a boolean or {}", COMPRESSIONS.join(", ")),
                    })
                }
            };
            Update::Set(Value::Text(algorithm.to_owned()))
        }
        Kind::Path { must_exist } => {
            let path = resolve_path(key, raw, base, must_exist)?;
            Update::Set(Value::Text(path.to_string_lossy().into_owned()))
        }
        Kind::List(split) => Update::Append(split_items(raw, split)),
        Kind::PathList { must_exist } => {
            let mut items = Vec::new();
            for item in split_items(raw, Split::WordsAndCommas) {
                let (source, target) = match item.split_once(':') {
                    Some((source, target)) => (source, Some(target)),
                    None => (item.as_str(), None),
                };
                if source.is_empty() || target == Some("") {
                    return Err(ErrorKind::InvalidValue {
                        key: key.to_owned(),
                        reason: format!("{item:?} is not PATH or SOURCE:TARGET"),
                    });
                }
                let source = resolve_path(key, source, base, must_exist)?;
                let mut item = source.to_string_lossy().into_owned();
                if let Some(target) = target {
                    item.push(':');
                    item.push_str(target);
                }
                items.push(item);
            }
            Update::Append(items)
        }
    };
    Ok(update)
}

fn split_items(raw: &str, split: Split) -> Vec<String> {
    raw.split(|c: char| c.is_whitespace() || (split == Split::WordsAndCommas && c == ','))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn resolve_path(key: &str, raw: &str, base: &Path, must_exist: bool) -> Result<PathBuf, ErrorKind> {
    let path = normalize(&base.join(raw));
    if must_exist && !path.exists() {
        return Err(ErrorKind::MissingPath {
            key: key.to_owned(),
            path,
        });
    }
    Ok(path)
}

/// Lexically removes `.` and `..` components (no symlinks are followed).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::settings::lookup;

    fn update(name: &str, raw: &str) -> Result<Update, ErrorKind> {
        parse_update(lookup(name).unwrap(), raw, Path::new("/nonexistent"))
    }

    #[test]
    fn lists_split_per_setting() {
        assert_eq!(
            update("Packages", "a,b c\nd").unwrap(),
            Update::Append(vec!["a".into(), "b".into(), "c".into(), "d".into()])
        );
        assert_eq!(
            update("KernelCommandLine", "console=ttyS0,115200 quiet").unwrap(),
            Update::Append(vec!["console=ttyS0,115200".into(), "quiet".into()])
        );
        assert_eq!(update("Packages", "").unwrap(), Update::Reset);
    }

    #[test]
    fn typed_values() {
        assert_eq!(
            update("WithDocs", "yes").unwrap(),
            Update::Set(Value::Bool(true))
        );
        assert!(matches!(
            update("WithDocs", "maybe"),
            Err(ErrorKind::InvalidBool { .. })
        ));
        assert!(matches!(
            update("Format", "vhd"),
            Err(ErrorKind::InvalidEnum { .. })
        ));
        assert!(matches!(
            update("SourceDateEpoch", "-1"),
            Err(ErrorKind::InvalidInt { .. })
        ));
        assert_eq!(
            update("CompressOutput", "yes").unwrap(),
            Update::Set(Value::Text("zstd".into()))
        );
        assert!(matches!(
            update("ExtraTrees", "missing"),
            Err(ErrorKind::MissingPath { .. })
        ));
        assert_eq!(
            update("OutputDirectory", "../out").unwrap(),
            Update::Set(Value::Text("/out".into()))
        );
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
    }
}
