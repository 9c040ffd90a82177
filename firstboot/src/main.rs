//! The `globular` command: logging setup, CLI parsing and one library call.

use std::process::ExitCode;

fn main() -> ExitCode {
    globular_cluster::logging::init(globular_cluster::logging::Style::Full);
    match globular_firstboot::cli::run() {
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
