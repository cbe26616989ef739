//! `kube-insight`: one binary, many targets. See `kube-insight --help`.

mod cli;
mod config;
mod run;
mod targets;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-insight: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
