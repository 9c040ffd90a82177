//! mkosi specifiers: `%d`, `%r`, `%a`, ... in setting and condition values.

use super::error::ErrorKind;

/// The specifiers the builder expands, with what they stand for (mkosi(1)).
pub const SPECIFIERS: &[(char, &str)] = &[
    ('d', "Distribution"),
    ('r', "Release"),
    ('a', "Architecture"),
    ('t', "Format"),
    ('o', "Output"),
    ('O', "OutputDirectory"),
    ('i', "ImageId"),
    ('v', "ImageVersion"),
    ('p', "Profiles"),
    ('C', "directory of the current configuration file"),
    (
        'D',
        "directory the configuration was loaded from (--directory)",
    ),
    (
        'P',
        "working directory: the configuration directory being read",
    ),
    (
        'I',
        "image: `main` or the sub-image's name in mkosi.images/",
    ),
];

/// Replaces every `%X` in `raw` with `lookup(X)`; `%%` is a literal `%`.
/// `lookup` returns `None` for a character that is not a specifier.
pub fn expand(raw: &str, lookup: impl Fn(char) -> Option<String>) -> Result<String, ErrorKind> {
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => return Err(ErrorKind::DanglingPercent),
            Some('%') => out.push('%'),
            Some(s) => out.push_str(&lookup(s).ok_or(ErrorKind::UnknownSpecifier(s))?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(c: char) -> Option<String> {
        match c {
            'd' => Some("debian".into()),
            'v' => Some("1.2".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_and_escapes() {
        assert_eq!(expand("%d-%v 100%%", lookup).unwrap(), "debian-1.2 100%");
        assert!(matches!(
            expand("%q", lookup),
            Err(ErrorKind::UnknownSpecifier('q'))
        ));
        assert!(matches!(
            expand("50%", lookup),
            Err(ErrorKind::DanglingPercent)
        ));
        assert_eq!(expand("ü%dé", lookup).unwrap(), "üdebiané");
    }
}
