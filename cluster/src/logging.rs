//! The logging setup of the binaries (`builder`, `globular`): `tracing` to
//! stderr (the journal on a node), `RUST_LOG` to filter, `info` by default,
//! colours only on a terminal. Libraries only emit events; `main` calls
//! [`init`] once.
//!
//! It lives in `globular-cluster` because both binaries depend on it.

/// How much each line carries besides the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Level and message: a command run by a person (`builder`).
    Compact,
    /// Time, level, module and message: a service's log (`globular`).
    Full,
}

/// Installs the stderr subscriber (once; later calls do nothing).
pub fn init(style: Style) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match style {
        Style::Compact => builder.without_time().with_target(false).try_init(),
        Style::Full => builder.try_init(),
    };
}
