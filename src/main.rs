//! Wiring only: parse the command line, load settings, start logging, run the command.

use std::process::ExitCode;

use clap::Parser;
use portcullis::cli::{self, Cli};
use portcullis::error::error_chain;
use portcullis::telemetry;

#[global_allocator]
static ALLOCATOR: portcullis::Allocator = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.settings() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(&settings.log);
    let outcome = actix_web::rt::System::new().block_on(cli::run(cli.command, settings));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error.chain = %error_chain(&err), "portcullis stopped with an error");
            eprintln!("error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}
