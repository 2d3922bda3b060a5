//! `agent`'s entry: parse, resolve, run, and map the result to an exit status. An error is
//! printed here, once, as one line with its causes (`{:#}`); everything else prints through
//! the printer.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = agent::cli::Cli::parse();
    let result = cli.resolve().and_then(|settings| {
        let runtime = tokio::runtime::Runtime::new()?;
        let result = runtime.block_on(agent::run(settings));
        // A read of the terminal (agent ssh) may still be blocked in the runtime's pool.
        runtime.shutdown_background();
        result
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            #[allow(clippy::print_stderr)] // the one error line, after the printer is done
            {
                eprintln!("agent: {e:#}");
            }
            ExitCode::from(agent::exit::ERROR)
        }
    }
}
