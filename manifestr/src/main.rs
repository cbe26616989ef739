use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = manifestr::cli::Cli::parse();
    match manifestr::cli::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", manifestr::cli::report(&err));
            ExitCode::from(err.exit_code())
        }
    }
}
