//! The `globular` command: logging setup, CLI parsing and one library call.

use std::process::ExitCode;

fn main() -> ExitCode {
    globular_firstboot::logging::init();
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
