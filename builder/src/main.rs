//! The `builder` command: logging setup, CLI parsing and one library call.

use std::process::ExitCode;

fn main() -> ExitCode {
    globular_cluster::logging::init(globular_cluster::logging::Style::Compact);
    match builder::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}
