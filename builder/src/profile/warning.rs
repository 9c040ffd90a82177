//! Warnings about a configuration tree: each names the file and, where there is
//! one, the line. The resolver collects them in [`Config::warnings`]
//! (crate::profile::Config) and the commands log each with `tracing::warn!`.

use std::fmt;
use std::path::PathBuf;

/// Something in the tree the builder read but does not act on as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: PathBuf,
    /// 1-based line, or 0 when the warning is about a file or directory.
    pub line: usize,
    /// The setting (or section, or sub-image) the warning is about.
    pub setting: String,
    pub kind: WarningKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningKind {
    /// A known setting the builder accepts but does not implement.
    NotImplemented,
    /// A name mkosi does not know; ignored, as mkosi (since v26) ignores it.
    UnknownSetting { section: String },
    /// A setting outside its section; applied, as mkosi applies it.
    WrongSection { expected: String, found: String },
    /// A section mkosi does not read; its settings are ignored.
    UnknownSection,
    /// An older spelling (`@Setting=`, a compat name); applied as `new`.
    Deprecated { new: String },
    /// A setting mkosi removed; ignored.
    Retired { note: String },
    /// A sub-image in `mkosi.images/` that was resolved but is not built.
    SubimageNotBuilt,
}

impl Warning {
    pub fn new(
        path: impl Into<PathBuf>,
        line: usize,
        setting: impl Into<String>,
        kind: WarningKind,
    ) -> Warning {
        Warning {
            path: path.into(),
            line,
            setting: setting.into(),
            kind,
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line != 0 {
            write!(f, ":{}", self.line)?;
        }
        let name = &self.setting;
        match &self.kind {
            WarningKind::NotImplemented => write!(
                f,
                ": {name}= is not implemented by the builder and has no effect"
            ),
            WarningKind::UnknownSetting { section } => {
                write!(f, ": unknown setting {name}= in [{section}], ignored")
            }
            WarningKind::WrongSection { expected, found } => write!(
                f,
                ": setting {name}= belongs in section [{expected}], not [{found}]"
            ),
            WarningKind::UnknownSection => {
                write!(f, ": unknown section [{name}], its settings are ignored")
            }
            WarningKind::Deprecated { new } => {
                write!(f, ": {name}= is deprecated, use {new}= instead")
            }
            WarningKind::Retired { note } => write!(f, ": {name}= was removed from mkosi: {note}"),
            WarningKind::SubimageNotBuilt => write!(
                f,
                ": sub-image {name} is resolved but not built: the builder builds only the main image"
            ),
        }
    }
}
