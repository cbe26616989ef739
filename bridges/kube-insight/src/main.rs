//! `kube-insight`: one binary, many targets. See `kube-insight --help`.

mod cli;
mod config;
mod events_cmd;
mod run;
mod targets;
mod topology_cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return cli::usage_error(e),
    };
    match cli::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-insight: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
