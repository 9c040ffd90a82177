//! Errors about configuration input. Every error names the file and, where there
//! is one, the line.

use std::fmt;
use std::path::PathBuf;

/// An error in a configuration tree, rendered on one line as `FILE:LINE: message`.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line, or 0 when the error is about the file as a whole.
    pub line: usize,
    pub kind: ErrorKind,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.kind)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.kind)
        }
    }
}

/// What went wrong. Callers (and tests) match on this.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("section header is not terminated by ']'")]
    UnterminatedSection,
    #[error("invalid section name [{0}]")]
    InvalidSectionName(String),
    #[error("setting {0}= appears before any [Section] header")]
    OutsideSection(String),
    #[error("expected Key=Value or [Section], found neither")]
    MissingEquals,
    #[error("invalid setting name {0:?}")]
    InvalidKey(String),
    #[error("indented continuation line without a setting before it")]
    OrphanContinuation,
    #[error("{key}= cannot be configured in sub-image {image} (only in the main image)")]
    NotInSubimage { key: String, image: String },
    #[error("unknown condition {key}= in section [{section}]")]
    UnknownCondition { section: String, key: String },
    #[error("{key}=: invalid boolean {value:?} (expected yes/no, true/false, on/off or 1/0)")]
    InvalidBool { key: String, value: String },
    #[error("{key}=: invalid integer {value:?}")]
    InvalidInt { key: String, value: String },
    #[error("{key}=: invalid value {value:?} (expected one of: {expected})")]
    InvalidEnum {
        key: String,
        value: String,
        expected: String,
    },
    #[error("{key}=: {reason}")]
    InvalidValue { key: String, reason: String },
    #[error("unknown specifier '%{0}' (write '%%' for a literal '%')")]
    UnknownSpecifier(char),
    #[error("'%' at the end of a value (write '%%' for a literal '%')")]
    DanglingPercent,
    #[error("{key}=: {path} does not exist")]
    MissingPath { key: String, path: PathBuf },
    #[error("include cycle: {0}")]
    IncludeCycle(String),
    #[error("file is not valid UTF-8 (first invalid byte at column {column})")]
    NotUtf8 { column: usize },
    #[error("template error: {0}")]
    Template(String),
    #[error("assertion failed: {0}")]
    AssertionFailed(String),
    #[error("cannot read: {0}")]
    Io(#[source] std::io::Error),
}

impl ConfigError {
    pub fn new(path: impl Into<PathBuf>, line: usize, kind: ErrorKind) -> Self {
        ConfigError {
            path: path.into(),
            line,
            kind,
        }
    }
}
