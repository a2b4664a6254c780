//! `crdgen [DIR...]`: writes the CRDs of `ferrocket.io` generated from the Rust types into each
//! DIR (default: `crds/` and the Helm chart's `charts/ferrocket/crds/`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() {
        dirs = ferrocket_operator::crdgen::DIRS.iter().map(|d| d.to_string()).collect();
    }
    for dir in dirs {
        for name in ferrocket_operator::crdgen::write(std::path::Path::new(&dir))? {
            println!("wrote {dir}/{name}");
        }
    }
    Ok(())
}
