use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = agent::cli::Cli::parse();
    let result = cli.resolve().and_then(|settings| {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(agent::run(settings))
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
