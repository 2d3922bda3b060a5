//! agent-web [--bind ADDR] [--port PORT] [--name NAME]
//! Environment: AGENT_WEB_PORT, AGENT_WEB_NAME, AWS_EC2_METADATA_SERVICE_ENDPOINT.

use std::process::ExitCode;
use std::time::Duration;

use agent_web::imds;

struct Config {
    bind: String,
    port: u16,
    name: Option<String>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Config, String> {
    let mut c = Config {
        bind: "0.0.0.0".into(),
        port: std::env::var("AGENT_WEB_PORT")
            .ok()
            .map(|p| p.parse())
            .transpose()
            .map_err(|_| "AGENT_WEB_PORT is not a port")?
            .unwrap_or(80),
        name: std::env::var(agent_protocol::env::WEB_NAME)
            .ok()
            .filter(|n| !n.is_empty()),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => c.bind = value()?,
            "--port" => c.port = value()?.parse().map_err(|_| "--port takes a number from 0 to 65535")?,
            "--name" => c.name = Some(value()?),
            _ => {
                return Err(format!(
                    "unknown argument {flag:?}; usage: agent-web [--bind ADDR] [--port PORT] [--name NAME]"
                ));
            }
        }
    }
    Ok(c)
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent-web: {e}");
            return ExitCode::from(2);
        }
    };
    let endpoint = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|_| imds::DEFAULT_ENDPOINT.into());
    // On EC2 the instance id wins (it is what the lab reports); elsewhere the configured name.
    let instance = match imds::instance_id(&endpoint, Duration::from_secs(2)).await {
        Ok(id) => id,
        Err(why) => match config.name {
            Some(name) => {
                eprintln!("agent-web: not on EC2 ({why}); answering as {name}");
                name
            }
            None => {
                eprintln!("agent-web: cannot read the instance id ({why}) and no --name given");
                return ExitCode::FAILURE;
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind((config.bind.as_str(), config.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("agent-web: cannot listen on {}:{}: {e}", config.bind, config.port);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "agent-web: instance {instance} listening on {}",
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    match agent_web::run(listener, instance, agent_protocol::stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent-web: {e}");
            ExitCode::FAILURE
        }
    }
}
