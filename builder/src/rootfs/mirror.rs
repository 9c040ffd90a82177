//! Which apt repositories the package stage uses.
//!
//! `Mirror=` and `Snapshot=` from the profile win; otherwise the host's own apt
//! sources are used (deb822 `.sources` files or `sources.list`), falling back to
//! the distribution's public mirror.

use std::path::Path;

/// One `deb URI SUITE COMPONENTS` source line for mmdebstrap.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Source {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
}

impl Source {
    pub fn line(&self) -> String {
        format!(
            "deb {} {} {}",
            self.uri,
            self.suite,
            self.components.join(" ")
        )
    }
}

/// The sources for `distribution`/`release`.
pub fn sources(
    distribution: &str,
    release: &str,
    mirror: Option<&str>,
    snapshot: Option<&str>,
    components: &[String],
    apt_dir: &Path,
) -> Vec<Source> {
    let components = if components.is_empty() {
        vec!["main".to_owned()]
    } else {
        components.to_vec()
    };
    let (main, security) = match (distribution, snapshot) {
        ("debian", Some(snapshot)) => (
            format!("http://snapshot.debian.org/archive/debian/{snapshot}"),
            format!("http://snapshot.debian.org/archive/debian-security/{snapshot}"),
        ),
        ("debian", None) => {
            let (host_main, host_security) = host_debian_uris(apt_dir);
            (
                mirror.map(str::to_owned).unwrap_or(host_main),
                host_security,
            )
        }
        ("ubuntu", _) => (
            mirror
                .unwrap_or("http://archive.ubuntu.com/ubuntu")
                .to_owned(),
            "http://security.ubuntu.com/ubuntu".to_owned(),
        ),
        (_, _) => (mirror.unwrap_or_default().to_owned(), String::new()),
    };
    let source = |uri: &str, suite: String| Source {
        uri: uri.to_owned(),
        suite,
        components: components.clone(),
    };
    let mut out = vec![source(&main, release.to_owned())];
    let rolling = matches!(release, "sid" | "unstable" | "rawhide");
    if !rolling && matches!(distribution, "debian" | "ubuntu") {
        out.push(source(&main, format!("{release}-updates")));
        if distribution == "ubuntu" || release != "testing" {
            out.push(source(&security, format!("{release}-security")));
        }
    }
    out
}

/// The Debian archive and security URIs the host's apt uses.
fn host_debian_uris(apt_dir: &Path) -> (String, String) {
    let mut main = None;
    let mut security = None;
    let mut consider = |uri: &str, suites: &str| {
        let uri = uri.trim_end_matches('/').to_owned();
        if suites.split_whitespace().any(|s| s.ends_with("-security")) {
            security.get_or_insert(uri);
        } else if uri.contains("debian") {
            main.get_or_insert(uri);
        }
    };
    let mut files: Vec<_> = std::fs::read_dir(apt_dir.join("sources.list.d"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "sources"))
    {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
                    .map(str::trim)
            };
            let enabled = field("Enabled").is_none_or(|v| v != "no");
            if enabled && field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
                if let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) {
                    if let Some(uri) = uris.split_whitespace().next() {
                        consider(uri, suites);
                    }
                }
            }
        }
    }
    let list = std::fs::read_to_string(apt_dir.join("sources.list")).unwrap_or_default();
    for line in list.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"deb") && words.len() >= 3 {
            let (uri, suite) = if words[1].starts_with('[') {
                let end = words.iter().position(|w| w.ends_with(']')).unwrap_or(1);
                (words.get(end + 1), words.get(end + 2))
            } else {
                (words.get(1), words.get(2))
            };
            if let (Some(uri), Some(suite)) = (uri, suite) {
                consider(uri, suite);
            }
        }
    }
    (
        main.unwrap_or_else(|| "http://deb.debian.org/debian".to_owned()),
        security.unwrap_or_else(|| "http://deb.debian.org/debian-security".to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deb822_host_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n",
        )
        .unwrap();
        let s = sources("debian", "bookworm", None, None, &[], dir.path());
        let lines: Vec<String> = s.iter().map(Source::line).collect();
        assert_eq!(
            lines,
            [
                "deb http://mirror.example/debian bookworm main",
                "deb http://mirror.example/debian bookworm-updates main",
                "deb http://mirror.example/debian-security bookworm-security main",
            ]
        );
        let s = sources(
            "debian",
            "bookworm",
            Some("http://m/d"),
            None,
            &["main".into(), "contrib".into()],
            dir.path(),
        );
        assert_eq!(s[0].line(), "deb http://m/d bookworm main contrib");
        let s = sources(
            "debian",
            "sid",
            None,
            Some("20250101T000000Z"),
            &[],
            dir.path(),
        );
        assert_eq!(s.len(), 1);
        assert!(s[0].uri.contains("snapshot.debian.org"));
    }
}
