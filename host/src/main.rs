//! The `host` binary: see [`handler_host::cli`].

use clap::Parser;
use handler_host::cli::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = handler_host::cli::Cli::parse();
    // PostgreSQL's notices ("relation … already exists, skipping" on every start) say nothing
    // an operator needs.
    let filter = EnvFilter::try_from_env("HOST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        // One JSON object a line; the fields of the message being handled (its ids) ride in
        // `span`.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        // Colour only for a person at a terminal: a log file or pipe gets plain text.
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
    match handler_host::cli::execute(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
