//! Rendering a resolved configuration, like `mkosi summary`.

use serde_json::{Map, Value as Json};

use super::settings::{Section, SETTINGS};
use super::value::Value;
use super::Config;

/// The configuration as JSON: mkosi setting names as keys, lists as arrays.
/// Implemented settings always appear (`null` when unset); others only when set.
pub fn to_json(config: &Config) -> Json {
    let mut map = Map::new();
    for setting in SETTINGS {
        match config.values.get(setting.key) {
            Some(value) => {
                map.insert(
                    setting.key.to_owned(),
                    serde_json::to_value(value).unwrap_or(Json::Null),
                );
            }
            None if setting.implemented => {
                let empty = if setting.kind.is_list() {
                    Json::Array(Vec::new())
                } else {
                    Json::Null
                };
                map.insert(setting.key.to_owned(), empty);
            }
            None => {}
        }
    }
    if !config.subimages.is_empty() {
        let subimages = config
            .subimages
            .iter()
            .map(|(name, subimage)| (name.clone(), to_json(subimage)))
            .collect();
        map.insert("Subimages".to_owned(), Json::Object(subimages));
    }
    Json::Object(map)
}

/// The configuration as text, one `[Section]` block per section.
pub fn to_text(config: &Config) -> String {
    let width = SETTINGS
        .iter()
        .filter(|s| config.values.contains_key(s.key))
        .map(|s| s.key.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    out.push_str(&format!(
        "{:>width$}: {}\n",
        "Directory",
        config.directory.display()
    ));
    if let Some(role) = &config.role {
        out.push_str(&format!("{:>width$}: {role}\n", "Role"));
    }
    for section in Section::ALL {
        let rows: Vec<_> = SETTINGS
            .iter()
            .filter(|s| s.section == section)
            .filter_map(|s| config.values.get(s.key).map(|v| (s.key, v)))
            .filter(|(_, v)| !matches!(v, Value::List(items) if items.is_empty()))
            .collect();
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!("\n[{section}]\n"));
        for (name, value) in rows {
            match value {
                Value::List(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let label = if i == 0 { name } else { "" };
                        out.push_str(&format!(
                            "{label:>width$}{} {item}\n",
                            if i == 0 { ":" } else { " " }
                        ));
                    }
                }
                other => out.push_str(&format!("{name:>width$}: {}\n", other.display())),
            }
        }
    }
    for (name, subimage) in &config.subimages {
        out.push_str(&format!("\n[Subimage {name}]\n"));
        for line in to_text(subimage).lines().skip(1) {
            match line.trim() {
                "" => {}
                trimmed if trimmed.starts_with('[') => out.push_str(&format!("  {trimmed}\n")),
                _ => out.push_str(&format!("  {line}\n")),
            }
        }
    }
    out
}
