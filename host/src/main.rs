//! The `host` binary: see [`handler_host::cli`].

use clap::Parser;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // PostgreSQL's notices ("relation … already exists, skipping" on every start)
            // say nothing an operator needs.
            EnvFilter::try_from_env("HOST_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or pipe gets plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    let cli = handler_host::cli::Cli::parse();
    match handler_host::cli::execute(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
