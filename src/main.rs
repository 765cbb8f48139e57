//! Entry point: wiring only. Without arguments, serves Lambda invocations; `invoke` runs the
//! handler once on an event file and prints the response.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bike_prediction::config::Config;
use bike_prediction::handler::{Handler, HandlerError, Invocation, error_chain};
use bike_prediction::kinesis::EventBody;
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
    let logs = telemetry::init();
    let cli = Cli::parse();
    if let Err(error) = logs {
        return fail("cold start failed", &error);
    }
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
    let served = match cli.command {
        Some(Command::Invoke { event }) => return invoke(&handler, &event).await,
        None => serve(&handler).await,
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail("failed", error.as_ref()),
    }
}

/// Runs the handler once on the event file and prints the response; an invocation error is
/// logged as Lambda would be told it (error type and message), once.
async fn invoke(handler: &Handler, event: &Path) -> ExitCode {
    let event = match read_event(event) {
        Ok(event) => event,
        Err(error) => return fail("failed", error.as_ref()),
    };
    let mut response = match handler.handle_bytes(&event).await {
        Ok(handled) => handled.response,
        Err(error) => {
            invocation_failed(error);
            return ExitCode::FAILURE;
        }
    };
    response.push(b'\n');
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &response) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail("cannot write the response", &error),
    }
}

fn read_event(event: &Path) -> anyhow::Result<Vec<u8>> {
    if event.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        Ok(bytes)
    } else {
        std::fs::read(event)
            .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", event.display()))
    }
}

/// Logs why an invocation failed as Lambda is told it (when serving, `lambda_runtime` logs
/// it).
fn invocation_failed(error: HandlerError) {
    let diagnostic = Diagnostic::from(error);
    tracing::error!(
        error_type = diagnostic.error_type,
        error = diagnostic.error_message,
        "invocation failed"
    );
}

async fn serve(handler: &Handler) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    // The runtime parses the request body straight into a `KinesisBatch`, or the reason it is
    // not a Kinesis event: one pass over it.
    lambda_runtime::run(service_fn(|event: LambdaEvent<EventBody>| async move {
        let invocation = Invocation::from(&event.context);
        let records = event.payload.0.map_err(HandlerError::from)?;
        let handled = handler.handle(&records, &invocation).await;
        telemetry::flush_metrics(
            metrics,
            handled.as_ref().ok().map(|handled| &handled.report),
        );
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
