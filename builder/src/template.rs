//! Tera templating of configuration and overlay files (`*.tera`).
//!
//! Errors are reduced to one line with the template line they refer to: tera's
//! parse errors carry a position; for render errors (an unknown variable, filter
//! or function) the first line naming the offending identifier is reported.

use std::error::Error as _;

/// File suffix that marks a template; it is dropped from the rendered name.
pub const SUFFIX: &str = ".tera";

/// A template failure: 1-based line (0 if unknown) and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub line: usize,
    pub message: String,
}

/// Renders `source` with `context`. `name` only labels tera's internal errors.
pub fn render(name: &str, source: &str, context: &tera::Context) -> Result<String, TemplateError> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(Vec::new());
    tera.add_raw_template(name, source)
        .map_err(|e| describe(&e, source))?;
    tera.render(name, context).map_err(|e| describe(&e, source))
}

fn describe(error: &tera::Error, source: &str) -> TemplateError {
    let mut messages = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(e) = cause {
        messages.push(e.to_string());
        cause = e.source();
    }
    // Parse errors: pest's report has "--> LINE:COL" and "= expected ...".
    for message in &messages {
        if let Some(position) = message.lines().find_map(|l| l.trim().strip_prefix("--> ")) {
            let mut parts = position.split(':');
            let mut line = parts
                .next()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0);
            if line > source.lines().count() {
                // Parsing ran off the end: blame the last opened tag instead.
                let lines: Vec<&str> = source.lines().collect();
                line = lines
                    .iter()
                    .rposition(|l| l.contains("{{") || l.contains("{%"))
                    .map_or(line, |i| i + 1);
            }
            let column = parts.next().and_then(|c| c.trim().parse::<usize>().ok());
            let expected = message
                .lines()
                .find_map(|l| l.trim().strip_prefix("= "))
                .unwrap_or("syntax error");
            let message = match column {
                Some(column) => format!("syntax error at column {column}: {expected}"),
                None => format!("syntax error: {expected}"),
            };
            return TemplateError { line, message };
        }
    }
    // Render errors: the innermost message is the specific one.
    let innermost = messages
        .last()
        .map(String::as_str)
        .unwrap_or("template error");
    let message = innermost
        .split(" while rendering")
        .next()
        .unwrap_or(innermost)
        .lines()
        .next()
        .unwrap_or(innermost)
        .to_owned();
    let line = backquoted(&message)
        .and_then(|ident| {
            source
                .lines()
                .position(|l| l.contains(ident) && (l.contains("{{") || l.contains("{%")))
        })
        .map_or(0, |i| i + 1);
    TemplateError { line, message }
}

fn backquoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> tera::Context {
        let mut c = tera::Context::new();
        c.insert("role", "worker");
        c
    }

    #[test]
    fn renders() {
        assert_eq!(
            render("t", "role={{ role }}", &context()).unwrap(),
            "role=worker"
        );
    }

    #[test]
    fn syntax_error_has_line() {
        let e = render("t", "a\nb\n{{ role \nc", &context()).unwrap_err();
        assert!(e.line >= 3, "{e:?}");
        assert!(e.message.starts_with("syntax error"), "{e:?}");
        assert!(!e.message.contains('\n'));
    }

    #[test]
    fn missing_variable_has_line() {
        let e = render("t", "a\n{{ role }}\nx={{ nope }}\n", &context()).unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        assert!(e.message.contains("nope"), "{e:?}");
    }
}
