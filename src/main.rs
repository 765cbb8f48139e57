//! Entry point: wiring only. Without arguments, serves Lambda invocations; `invoke` runs the
//! handler once on an event file and prints the response.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use bike_prediction::config::Config;
use bike_prediction::handler::{Handler, Invocation, error_chain};
use bike_prediction::kinesis::KinesisBatch;
use bike_prediction::{memory, startup, telemetry};
use clap::{Parser, Subcommand};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::value::RawValue;

#[derive(Parser)]
#[command(
    version,
    about = "Bike-demand predictions for Kinesis records, as an AWS Lambda"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the handler once on a Kinesis event, print the Lambda response on stdout, publish nothing.
    Invoke {
        /// Event JSON file, or `-` for stdin.
        #[arg(long)]
        event: PathBuf,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    memory::keep_freed_memory();
    telemetry::init();
    let cli = Cli::parse();
    // The local `invoke` command never publishes.
    let publish = cli.command.is_none();
    let handler = match Config::from_env() {
        Ok(config) => startup::start(&config, publish).await,
        Err(error) => Err(error.into()),
    };
    let handler = match handler {
        Ok(handler) => handler,
        Err(error) => return fail("cold start failed", &error),
    };
    let result = match cli.command {
        Some(Command::Invoke { event }) => invoke(&handler, &event).await,
        None => serve(&handler).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail("failed", error.as_ref()),
    }
}

async fn invoke(handler: &Handler, event: &PathBuf) -> anyhow::Result<()> {
    let event = if event.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        bytes
    } else {
        std::fs::read(event)
            .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", event.display()))?
    };
    let mut response = handler.handle_bytes(&event).await?.response;
    response.push(b'\n');
    std::io::Write::write_all(&mut std::io::stdout().lock(), &response)?;
    Ok(())
}

async fn serve(handler: &Handler) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    // The runtime parses the request body straight into a `KinesisBatch`: one pass over it.
    lambda_runtime::run(service_fn(|event: LambdaEvent<KinesisBatch>| async move {
        let invocation = Invocation::from(&event.context);
        let handled = handler.handle(&event.payload, &invocation).await;
        telemetry::flush_metrics(metrics);
        let response = handled?.response;
        let invalid = |error: &dyn std::error::Error| Diagnostic {
            error_type: "InvalidResponse".into(),
            error_message: error.to_string(),
        };
        let response = String::from_utf8(response).map_err(|error| invalid(&error))?;
        RawValue::from_string(response).map_err(|error| invalid(&error))
    }))
    .await
    .map_err(|error| anyhow::anyhow!(error))
}

fn fail(context: &str, error: &(dyn std::error::Error + 'static)) -> ExitCode {
    tracing::error!(error = %error_chain(error), "{context}");
    ExitCode::FAILURE
}
