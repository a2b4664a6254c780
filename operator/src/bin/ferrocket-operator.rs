//! `ferrocket-operator`: the Ferrocket operator's command line.
//!
//! - `ferrocket-operator run`: the operator (leader election, the BrokerSet, Topic and
//!   ConsumerGroup controllers, `/metrics`, `/healthz`, `/readyz`), logging JSON lines to stderr.
//! - `ferrocket-operator render --file BROKERSET.yaml`: prints, as YAML documents, every object
//!   the operator applies for that BrokerSet (like `helm template`: review or diff them).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrocket_operator::crd::BrokerSet;

#[derive(Parser)]
#[command(name = "ferrocket-operator", version, about = "Kubernetes operator for Ferrocket")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the operator against the cluster of the in-cluster config or KUBECONFIG.
    Run {
        #[command(flatten)]
        opts: ferrocket_operator::run::Options,
        /// Log as text instead of JSON lines.
        #[arg(long)]
        text_logs: bool,
    },
    /// Prints every object the operator applies for a BrokerSet, as YAML documents.
    Render {
        /// The BrokerSet manifest.
        #[arg(long, short)]
        file: String,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Run { opts, text_logs } => {
            init_logs(text_logs);
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(ferrocket_operator::run::run(opts)))
        }
        Cmd::Render { file } => render(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// JSON lines (one object per event) on stderr, filtered by `RUST_LOG` (default `info`).
fn init_logs(text: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if text {
        // Colours only on a terminal.
        let builder = builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

fn render(path: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let mut bs: BrokerSet = serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    // Rendered outside a cluster: stand in for what the API server would have assigned.
    bs.metadata.namespace.get_or_insert_with(|| "default".into());
    bs.metadata.uid.get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".into());
    let manifests = ferrocket_operator::render::render(&bs)?;
    for v in manifests.to_values() {
        print!("---\n{}", serde_yaml_ng::to_string(&v)?);
    }
    Ok(())
}
