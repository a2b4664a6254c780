//! `ferrocket-operator`: the Ferrocket operator's command line.
//!
//! - `ferrocket-operator render --file BROKERSET.yaml`: prints, as YAML documents, every object
//!   the operator applies for that BrokerSet (like `helm template`: review or diff them).

use std::process::ExitCode;

use ferrocket_operator::crd::BrokerSet;

const USAGE: &str = "usage: ferrocket-operator render --file BROKERSET.yaml";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["render", "--file", path] | ["render", "-f", path] => render(path),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn render(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut bs: BrokerSet = serde_yaml_ng::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    // Rendered outside a cluster: stand in for what the API server would have assigned.
    bs.metadata.namespace.get_or_insert_with(|| "default".into());
    bs.metadata.uid.get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".into());
    let manifests = ferrocket_operator::render::render(&bs)?;
    for v in manifests.to_values() {
        print!("---\n{}", serde_yaml_ng::to_string(&v)?);
    }
    Ok(())
}
