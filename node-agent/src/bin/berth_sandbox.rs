//! `berth-sandbox SPEC_FILE`: builds one sandbox and runs one program in it
//! (started by the node agent for every execution; see `sandbox::helper`).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(berth_node_agent::sandbox::helper::main(&args));
}
