//! The INI dialect of mkosi configuration files.
//!
//! Sections in brackets, `Key=Value` settings, comments starting with `#` or `;`,
//! and values continued on indented lines (joined with newlines). This module only
//! splits text into sections and assignments; what the names mean is decided by
//! the resolver.

use super::error::ErrorKind;

/// One `[Section]` with the assignments that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// 1-based line of the `[Section]` header.
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// One `Key=Value` assignment (with continuation lines folded in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// 1-based line of the `Key=` line.
    pub line: usize,
}

/// Splits `text` into sections. Errors carry the 1-based line they refer to.
pub fn parse(text: &str) -> Result<Vec<Section>, (usize, ErrorKind)> {
    let mut sections: Vec<Section> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            let entry = sections
                .last_mut()
                .and_then(|s| s.entries.last_mut())
                .ok_or((line, ErrorKind::OrphanContinuation))?;
            if !entry.value.is_empty() {
                entry.value.push('\n');
            }
            entry.value.push_str(trimmed);
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or((line, ErrorKind::UnterminatedSection))?
                .trim();
            if name.is_empty() || name.contains(['[', ']']) {
                return Err((line, ErrorKind::InvalidSectionName(name.to_owned())));
            }
            sections.push(Section {
                name: name.to_owned(),
                line,
                entries: Vec::new(),
            });
            continue;
        }
        let (key, value) = trimmed
            .split_once('=')
            .ok_or((line, ErrorKind::MissingEquals))?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err((line, ErrorKind::InvalidKey(key.to_owned())));
        }
        let section = sections
            .last_mut()
            .ok_or((line, ErrorKind::OutsideSection(key.to_owned())))?;
        section.entries.push(Entry {
            key: key.to_owned(),
            value: value.trim().to_owned(),
            line,
        });
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_comments_and_continuations() {
        let text = "# comment\n[Distribution]\nDistribution=debian\n; other\n[Content]\nPackages=\n    systemd\n\n    udev dbus\nHostname = node \n";
        let sections = parse(text).unwrap();
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].name, "Distribution");
        assert_eq!(sections[0].entries[0].value, "debian");
        assert_eq!(sections[1].entries[0].key, "Packages");
        assert_eq!(sections[1].entries[0].value, "systemd\nudev dbus");
        assert_eq!(sections[1].entries[0].line, 6);
        assert_eq!(sections[1].entries[1].key, "Hostname");
        assert_eq!(sections[1].entries[1].value, "node");
    }

    #[test]
    fn errors_carry_lines() {
        assert!(matches!(
            parse("[Content\nPackages=a"),
            Err((1, ErrorKind::UnterminatedSection))
        ));
        assert!(matches!(
            parse("Packages=a"),
            Err((1, ErrorKind::OutsideSection(_)))
        ));
        assert!(matches!(
            parse("[Content]\nPackages"),
            Err((2, ErrorKind::MissingEquals))
        ));
        assert!(matches!(
            parse("  indented=1"),
            Err((1, ErrorKind::OrphanContinuation))
        ));
        assert!(matches!(
            parse("[Content]\n=x"),
            Err((2, ErrorKind::InvalidKey(_)))
        ));
    }
}
